{
  description = "k3s-vm: a NixOS virtual machine running a single-node K3s cluster for test suites";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { nixpkgs, ... }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # The VM for the given parameters: the arguments of nix/default.nix (name, cpus,
      # memoryMiB, diskSizeMiB, k3sVersion, extraK3sFlagsJson, sshPublicKey, disableJson,
      # airgapImages, extraModules, ...), with this flake's nixpkgs. Under pure evaluation
      # extra modules are best given as Nix values (extraModules) rather than as paths in
      # extraModulesJson.
      mkVm =
        args:
        import ./nix/default.nix (
          {
            inherit nixpkgs;
            system = "x86_64-linux";
          }
          // args
        );
    in
    {
      lib = { inherit mkVm; };

      # `nix build` gives ./result/bin/run-k3s-vm-vm with the default parameters (no SSH key).
      packages = nixpkgs.lib.genAttrs systems (system: {
        default = mkVm { inherit system; };
      });
    };
}
