# The k3s-vm virtual machine: a NixOS guest running a single-node K3s server.
#
#   nix-build nix/ --argstr name k3s-vm --arg cpus 2 ...
#
# builds config.system.build.vm of nixos/modules/virtualisation/qemu-vm.nix, whose
# bin/run-<name>-vm starts QEMU. Every argument has a default, so `nix-build nix/` alone
# gives a VM named k3s-vm from the pinned nixpkgs (nixpkgs.json). List arguments are JSON
# strings so they can be passed with --argstr; `extraModules` (Nix values, for the flake's
# lib.mkVm) cannot be. The rules every argument must follow are in parameters.nix.
{
  # Where nixpkgs comes from (see nixpkgsSource in parameters.nix): "" for the pinned
  # revision in nixpkgs.json, "<nixpkgs>", a channel name such as "nixos-25.05", an
  # absolute path or an https:// tarball URL.
  nixpkgsSpec ? "",
  # A nixpkgs source tree given as a value (a path, or a flake input); overrides nixpkgsSpec.
  nixpkgs ? null,
  system ? builtins.currentSystem,
  # Host name, K3s node name and the run script's name (bin/run-<name>-vm).
  name ? "k3s-vm",
  cpus ? 2,
  memoryMiB ? 4096,
  diskSizeMiB ? 20480,
  # K3s minor version as in the nixpkgs attribute name ("1_31" for pkgs.k3s_1_31);
  # "" means pkgs.k3s.
  k3sVersion ? "",
  # JSON array of extra `k3s server` arguments, each reaching K3s as one argument, as given.
  extraK3sFlagsJson ? "[]",
  # One OpenSSH public key line root accepts, baked into the build; "" for none. k3s-vm
  # passes none: an instance's key reaches the VM at boot (k3s_vm.ssh_key= on the kernel
  # command line, see vm.nix), so one build serves every state directory.
  sshPublicKey ? "",
  # JSON array of packaged components to turn off (each becomes --disable=<name>).
  disableJson ? "[\"traefik\"]",
  # Preload the K3s package's air-gap image tarball so the cluster starts offline.
  airgapImages ? true,
  # Cut the guest off from the host's network and the internet (port forwards still work).
  offline ? false,
  # JSON array of absolute paths of further NixOS modules to import.
  extraModulesJson ? "[]",
  # Further NixOS modules given as Nix values (paths, attribute sets or functions).
  extraModules ? [ ],
  # JSON array of absolute paths of image archives (docker or OCI, e.g. nixpkgs dockerTools
  # outputs) that K3s imports at every start: built into the VM, so they need no import.
  preloadImagesJson ? "[]",
  ...
}:
let
  rules = import ./parameters.nix;

  fail = message: throw "k3s-vm: ${message}";

  jsonList =
    argName: json:
    if builtins.isString json then
      builtins.fromJSON json
    else
      fail "${argName} must be a JSON array passed with --argstr";

  # Accepts --arg airgapImages true as well as --argstr airgapImages true.
  flag =
    value:
    if value == "true" then
      true
    else if value == "false" then
      false
    else
      value;

  # A path (<nixpkgs>, an absolute path) is extended with `+`, which does not copy the tree
  # into the store the way "${nixpkgs}" would; a flake input is an attribute set whose
  # outPath is already a store path. Tarballs are fetched (and unpacked) into the store
  # once; with a sha256, Nix uses the store copy without downloading again.
  fetch =
    source:
    if source.sha256 == "" then
      builtins.fetchTarball source.url
    else
      builtins.fetchTarball { inherit (source) url sha256; };

  nixpkgsSource =
    if nixpkgs != null then
      (if builtins.isAttrs nixpkgs then nixpkgs.outPath else nixpkgs)
    else
      let
        source = rules.nixpkgsSource nixpkgsSpec;
      in
      if source.kind == "search-path" then
        # Without <nixpkgs> on the search path, Nix fails with
        # "file 'nixpkgs' was not found in the Nix search path".
        <nixpkgs>
      else if source.kind == "path" then
        (if builtins.pathExists (/. + source.path) then /. + source.path else fail "nixpkgs ${source.path} does not exist")
      else
        fetch source;

  # Each path becomes an imported module; `/. + path` turns the absolute path string
  # into a Nix path without copying anything.
  modulePath =
    path:
    if !builtins.isString path || builtins.substring 0 1 path != "/" then
      fail "extra NixOS module ${builtins.toJSON path} is not an absolute path"
    else if !builtins.pathExists (/. + path) then
      fail "extra NixOS module ${path} does not exist"
    else
      /. + path;

  parameters = builtins.mapAttrs (parameter: value: rules.check.${parameter} value) {
    inherit
      name
      cpus
      memoryMiB
      diskSizeMiB
      k3sVersion
      sshPublicKey
      ;
    extraK3sFlags = jsonList "extraK3sFlagsJson" extraK3sFlagsJson;
    disable = jsonList "disableJson" disableJson;
    airgapImages = flag airgapImages;
    offline = flag offline;
    preloadImages = jsonList "preloadImagesJson" preloadImagesJson;
  };

  # nixos/lib/eval-config.nix is the evaluator behind both <nixpkgs/nixos> and the flake's
  # lib.nixosSystem. Called directly it takes our module list and system as they are;
  # <nixpkgs/nixos> would add nothing but a default configuration read from NIXOS_CONFIG /
  # <nixos-config> and its own .vm wrapper. vm.nix imports qemu-vm.nix itself, exactly as
  # <nixpkgs/nixos>'s `vm` attribute does.
  nixos = import (nixpkgsSource + "/nixos/lib/eval-config.nix") {
    inherit system;
    modules = [
      (import ./vm.nix (parameters // { k3sArguments = rules.systemdArguments; }))
    ]
    ++ map modulePath (jsonList "extraModulesJson" extraModulesJson)
    ++ extraModules;
  };
in
# bin/run-<name>-vm and a `system` link to the guest's toplevel. `nixos` (config,
# options, ...) rides along for inspection, e.g.
#   nix-instantiate --eval nix/ -A nixos.config.services.k3s.extraFlags --strict
# The parameters are checked first, before nixpkgs is fetched or evaluated.
builtins.deepSeq parameters (nixos.config.system.build.vm // { inherit nixos; })
