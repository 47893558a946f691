# The k3s-vm virtual machine: a NixOS guest running a single-node K3s server.
#
#   nix-build nix/ --argstr name k3s-vm --arg cpus 2 ...
#
# builds config.system.build.vm of nixos/modules/virtualisation/qemu-vm.nix, whose
# bin/run-<name>-vm starts QEMU. Every argument has a default, so `nix-build nix/` alone
# gives a VM named k3s-vm. List arguments are JSON strings so they can be passed with
# --argstr; `extraModules` (Nix values, for the flake's lib.mkVm) cannot be.
{
  # A nixpkgs source tree: the <nixpkgs> path from NIX_PATH, or a flake input.
  # Without <nixpkgs> on the search path, nix-build itself fails with
  # "file 'nixpkgs' was not found in the Nix search path".
  nixpkgs ? <nixpkgs>,
  system ? builtins.currentSystem,
  # Host name, K3s node name and the run script's name (bin/run-<name>-vm).
  name ? "k3s-vm",
  cpus ? 2,
  memoryMiB ? 4096,
  diskSizeMiB ? 20480,
  # K3s minor version as in the nixpkgs attribute name ("1_31" for pkgs.k3s_1_31);
  # "" means pkgs.k3s.
  k3sVersion ? "",
  # JSON array of extra `k3s server` arguments.
  extraK3sFlagsJson ? "[]",
  # One OpenSSH public key line root accepts; "" for none.
  sshPublicKey ? "",
  # JSON array of packaged components to turn off (each becomes --disable=<name>).
  disableJson ? "[\"traefik\"]",
  # Preload the K3s package's air-gap image tarball so the cluster starts offline.
  airgapImages ? true,
  # JSON array of absolute paths of further NixOS modules to import.
  extraModulesJson ? "[]",
  # Further NixOS modules given as Nix values (paths, attribute sets or functions).
  extraModules ? [ ],
  ...
}:
let
  fail = message: throw "k3s-vm: ${message}";

  # A path (<nixpkgs>) is extended with `+`, which does not copy the tree into the store
  # the way "${nixpkgs}" would; a flake input is an attribute set whose outPath is already
  # a store path.
  nixpkgsSource = if builtins.isAttrs nixpkgs then nixpkgs.outPath else nixpkgs;

  isStringList = value: builtins.isList value && builtins.all builtins.isString value;

  jsonStringList =
    argName: json:
    if !builtins.isString json then
      fail "${argName} must be a JSON array of strings passed with --argstr"
    else
      let
        value = builtins.fromJSON json;
      in
      if isStringList value then value else fail "${argName} must be a JSON array of strings, got ${json}";

  wholeNumber =
    argName: least: value:
    if builtins.isInt value && value >= least then
      value
    else
      fail "${argName} must be a whole number of at least ${toString least} (pass it with --arg, not --argstr)";

  # Accepts --arg airgapImages true as well as --argstr airgapImages true.
  flag =
    argName: value:
    if builtins.isBool value then
      value
    else if value == "true" then
      true
    else if value == "false" then
      false
    else
      fail "${argName} must be true or false";

  # The name is the host name and the Kubernetes node name, so it must be a lower-case
  # RFC 1123 label (NixOS itself also accepts upper case and '_', which Kubernetes rejects).
  checkedName =
    if builtins.isString name && builtins.match "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?" name != null then
      name
    else
      fail "name \"${toString name}\" must be 1 to 63 lower-case letters, digits and dashes, starting and ending with a letter or digit";

  checkedKey =
    if !builtins.isString sshPublicKey then
      fail "sshPublicKey must be a string"
    else if builtins.match "[^\n\r]*" sshPublicKey == null then
      fail "sshPublicKey must be a single line (one OpenSSH public key)"
    else
      sshPublicKey;

  checkedK3sVersion =
    if builtins.isString k3sVersion && builtins.match "([0-9]+[._][0-9]+)?" k3sVersion != null then
      k3sVersion
    else
      fail "k3sVersion \"${toString k3sVersion}\" must look like 1_31 (or be empty for the default K3s)";

  # Each path becomes an imported module; `/. + path` turns the absolute path string
  # into a Nix path without copying anything.
  modulePath =
    path:
    if builtins.substring 0 1 path != "/" then
      fail "extra NixOS module \"${path}\" is not an absolute path"
    else if !builtins.pathExists (/. + path) then
      fail "extra NixOS module ${path} does not exist"
    else
      /. + path;

  parameters = {
    name = checkedName;
    cpus = wholeNumber "cpus" 1 cpus;
    memoryMiB = wholeNumber "memoryMiB" 1024 memoryMiB;
    diskSizeMiB = wholeNumber "diskSizeMiB" 2048 diskSizeMiB;
    k3sVersion = checkedK3sVersion;
    extraK3sFlags = jsonStringList "extraK3sFlagsJson" extraK3sFlagsJson;
    sshPublicKey = checkedKey;
    disable = jsonStringList "disableJson" disableJson;
    airgapImages = flag "airgapImages" airgapImages;
  };

  # nixos/lib/eval-config.nix is the evaluator behind both <nixpkgs/nixos> and the flake's
  # lib.nixosSystem. Called directly it takes our module list and system as they are;
  # <nixpkgs/nixos> would add nothing but a default configuration read from NIXOS_CONFIG /
  # <nixos-config> and its own .vm wrapper. vm.nix imports qemu-vm.nix itself, exactly as
  # <nixpkgs/nixos>'s `vm` attribute does.
  nixos = import (nixpkgsSource + "/nixos/lib/eval-config.nix") {
    inherit system;
    modules = [
      (import ./vm.nix parameters)
    ]
    ++ map modulePath (jsonStringList "extraModulesJson" extraModulesJson)
    ++ extraModules;
  };
in
# bin/run-<name>-vm and a `system` link to the guest's toplevel. `nixos` (config,
# options, ...) rides along for inspection, e.g.
#   nix-instantiate --eval nix/ -A nixos.config.services.k3s.extraFlags --strict
nixos.config.system.build.vm // { inherit nixos; }
