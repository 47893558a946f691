# The rules for the VM's build parameters, and the escaping of K3s flags for systemd.
#
# Pure Nix (builtins only, no nixpkgs), so it can be evaluated anywhere:
#   nix-instantiate --eval --strict -E '(import ./nix/parameters.nix).check.cpus 4'
# default.nix checks every argument with it; the TypeScript config layer applies the same
# rules before Nix runs, so a bad value is reported with the variable that set it.
let
  fail = message: throw "k3s-vm: ${message}";

  matches = regex: value: builtins.isString value && builtins.match regex value != null;

  wholeNumberIn =
    least: most: value:
    builtins.isInt value && value >= least && value <= most;

  # No newline, carriage return or NUL (Nix strings cannot hold NUL at all).
  oneLine = matches "[^\n\r]*";

  rules = {
    # A lower-case RFC 1123 label that starts with a letter: the host name, the Kubernetes
    # node name and the run script's name (bin/run-<name>-vm).
    name = matches "[a-z]([a-z0-9-]{0,61}[a-z0-9])?";
    cpus = wholeNumberIn 1 256;
    memoryMiB = wholeNumberIn 1024 1048576;
    diskSizeMiB = wholeNumberIn 2048 16777216;
    # A nixpkgs attribute suffix ("1_31" for pkgs.k3s_1_31), or "" for pkgs.k3s.
    k3sVersion = matches "([0-9]+_[0-9]+)?";
    extraK3sFlags = value: builtins.isList value && builtins.all (flag: matches "[^\n\r]+" flag) value;
    disable = value: builtins.isList value && builtins.all (matches "[a-z0-9][a-z0-9-]*") value;
    offline = builtins.isBool;
    airgapImages = builtins.isBool;
    sshPublicKey = value: builtins.isString value && oneLine value;
    # Absolute paths of image archives with a name K3s imports from its images directory
    # (the endings it looks for; src/config/option-table.ts preloadImagePattern is the same rule).
    preloadImages =
      value:
      builtins.isList value
      && builtins.all (matches "/[^\n\r]*\\.(tar|tar\\.gz|tgz|tar\\.zst|tzst|tar\\.bz2|tbz|tar\\.lz4)") value;
  };

  explanations = {
    name = "1 to 63 lower-case letters, digits and dashes, starting with a letter and ending with a letter or digit";
    cpus = "a whole number from 1 to 256 (pass it with --arg, not --argstr)";
    memoryMiB = "a whole number of MiB from 1024 to 1048576 (pass it with --arg, not --argstr)";
    diskSizeMiB = "a whole number of MiB from 2048 to 16777216 (pass it with --arg, not --argstr)";
    k3sVersion = "empty or a K3s minor version like 1_31";
    extraK3sFlags = "a list of non-empty strings without newlines";
    disable = "a list of K3s component names (lower-case letters, digits and dashes)";
    offline = "true or false";
    airgapImages = "true or false";
    sshPublicKey = "one line (one OpenSSH public key), or empty";
    preloadImages = "a list of absolute paths of image archives ending in .tar, .tar.gz, .tgz, .tar.zst, .tzst, .tar.bz2, .tbz or .tar.lz4";
  };

  show = builtins.toJSON;

  # The value when it follows the rule, else an evaluation error naming the parameter.
  check = builtins.mapAttrs (
    parameter: rule: value:
    if rule value then value else fail "${parameter} must be ${explanations.${parameter}}; got ${show value}"
  ) rules;

  # One argument of a systemd ExecStart= line that reaches the program exactly as given.
  # systemd.service(5), "Command lines": ExecStart= is split into words at whitespace,
  # where double quotes group a word and C-style backslash escapes are resolved inside
  # them ("\\" is a backslash, "\"" a double quote); % specifiers are expanded ("%%" is a
  # percent sign) and so are $VARIABLE references ("$$" is a dollar sign). A semicolon is
  # a command separator only as an unquoted word of its own. So: double every % and $,
  # escape backslashes and double quotes, and put the whole flag in double quotes.
  # (services.k3s joins extraFlags into ExecStart= without escaping them:
  # nixos/modules/services/cluster/rancher/default.nix in nixpkgs, read at
  # 011c1bdb102b0191d091f747cbefff1539f3a96d: `++ (lib.flatten cfg.extraFlags)`.)
  systemdArgument =
    flag:
    "\"" + builtins.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] flag + "\"";

  # Where the nixpkgs source comes from, for nixpkgsSpec (see default.nix):
  #   ""                      the pinned revision in nixpkgs.json
  #   "<nixpkgs>"             the nixpkgs on the Nix search path (NIX_PATH)
  #   "nixos-25.05", ...      the current tarball of that channel from channels.nixos.org
  #   "/abs/path"             a nixpkgs checkout or unpacked tarball
  #   "https://...tar.gz"     a tarball URL
  # The pin: nixpkgs.json's `rev` (a commit of the `branch` channel) and, once known, the
  # `sha256` of its unpacked tarball (scripts/pin-nixpkgs.mjs writes all three).
  # With it, Nix uses the store copy without asking the network (and checks what it
  # downloads); without it, Nix fetches the tarball once and re-checks it after tarball-ttl.
  # flake.nix pins the same rev.
  pin = builtins.fromJSON (builtins.readFile ./nixpkgs.json);
  revisionTarball = rev: "https://github.com/NixOS/nixpkgs/archive/${rev}.tar.gz";

  nixpkgsSource =
    spec:
    if !builtins.isString spec then
      fail "nixpkgsSpec must be a string"
    else if spec == "" then
      {
        kind = "pinned";
        url = revisionTarball pin.rev;
        sha256 = pin.sha256 or "";
        description = "nixpkgs ${pin.rev} (${pin.branch}, pinned${
          if (pin.sha256 or "") == "" then " without a sha256: Nix checks the download again hourly" else ""
        })";
      }
    else if spec == "<nixpkgs>" then
      {
        kind = "search-path";
        description = "<nixpkgs> from the Nix search path";
      }
    else if matches "(nixos|nixpkgs)-[0-9a-z][0-9a-z.-]*" spec then
      {
        kind = "channel";
        url = "https://channels.nixos.org/${spec}/nixexprs.tar.xz";
        sha256 = "";
        description = "the ${spec} channel";
      }
    else if matches "/[^\n\r]*" spec then
      {
        kind = "path";
        path = spec;
        description = "nixpkgs at ${spec}";
      }
    else if matches "https://[^\n\r ]+" spec then
      {
        kind = "url";
        url = spec;
        sha256 = "";
        description = "nixpkgs from ${spec}";
      }
    else
      fail "nixpkgs \"${spec}\" must be empty (the pinned revision), <nixpkgs>, a channel name such as nixos-25.05, an absolute path or an https:// tarball URL";
in
{
  inherit
    rules
    check
    systemdArgument
    nixpkgsSource
    pin
    revisionTarball
    ;
  # Every flag as one ExecStart= word (what services.k3s.extraFlags receives).
  systemdArguments = map systemdArgument;
}
