{
  description = "k3s-vm: a NixOS virtual machine running a single-node K3s cluster for test suites";

  # The same nixpkgs revision as nix/nixpkgs.json (the pin of `nix-build nix/`); update
  # both together. With the revision in the URL, the lock Nix writes on first use records
  # this revision and its hash.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/f5c082a40f7571c266e74e80ae2e68aadd8a9fc7";

  outputs =
    { nixpkgs, ... }:
    let
      # x86_64-linux only: the fixture's KVM probe and run-script handling (src/qemu/) know
      # qemu-system-x86_64 and the PC machine type, so an aarch64 VM would always fall back
      # to software emulation or be refused with K3S_VM_ACCEL=kvm.
      system = "x86_64-linux";

      # The VM for the given parameters: the arguments of nix/default.nix (name, cpus,
      # memoryMiB, diskSizeMiB, k3sVersion, offline, extraK3sFlagsJson, sshPublicKey,
      # disableJson, airgapImages, extraModules, ...), with this flake's nixpkgs. Under pure
      # evaluation extra modules are best given as Nix values (extraModules) rather than as
      # paths in extraModulesJson.
      mkVm = args: import ./nix/default.nix ({ inherit nixpkgs system; } // args);
    in
    {
      lib = { inherit mkVm; };

      # `nix build` gives ./result/bin/run-k3s-vm-vm with the default parameters (no SSH key).
      packages.${system}.default = mkVm { };
    };
}
