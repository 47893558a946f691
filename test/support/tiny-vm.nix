# A tiny stand-in expression for the Nix-layer tests: takes the fixture's parameters and
# builds an output with bin/run-<name>-vm (a script that only prints its parameters).
{ name ? "k3s-vm", cpus ? 2, memoryMiB ? 4096, diskSizeMiB ? 20480, sshPublicKey ? ""
, k3sVersion ? "", extraK3sFlagsJson ? "[]", ... }:
builtins.derivation {
  name = "tiny-vm-${name}";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  # The K3s flags are part of the derivation so that a test can make a new one (test/support/build-parameters.ts).
  inherit sshPublicKey k3sVersion extraK3sFlagsJson;
  cpus = toString cpus;
  memory = toString memoryMiB;
  args = [ "-c" ''
    PATH=/usr/bin:/bin
    echo "tiny-vm: building ${name} with $cpus CPUs"
    mkdir -p $out/bin
    printf '#!/bin/sh\necho run ${name} %s %s\n' "$cpus" "$memory" > $out/bin/run-${name}-vm
    chmod +x $out/bin/run-${name}-vm
  '' ];
}
