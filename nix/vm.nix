# The guest: a single-node K3s server, reachable over SSH (root, key only) and on the
# Kubernetes API port, run by the QEMU runner of nixos/modules/virtualisation/qemu-vm.nix.
#
# A function of the build parameters (checked in default.nix) that returns the module.
# Options used here exist in NixOS 24.11 and in later releases alike; where releases
# differ (services.k3s moved from services/cluster/k3s/ to services/cluster/rancher/),
# the module sticks to what both offer.
{
  name,
  cpus,
  memoryMiB,
  diskSizeMiB,
  k3sVersion,
  extraK3sFlags,
  sshPublicKey,
  disable,
  airgapImages,
  offline,
  # Absolute paths of image archives K3s imports at start (checked in parameters.nix).
  preloadImages ? [ ],
  # Turns flags into ExecStart= words that reach K3s as given (parameters.nix).
  k3sArguments,
}:
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  fail = message: throw "k3s-vm: ${message}";

  # --- K3s package -------------------------------------------------------------------

  k3sAttr = "k3s_" + lib.replaceStrings [ "." ] [ "_" ] k3sVersion;

  # Removed versions stay in pkgs as aliases that throw, so an attribute only counts when
  # it evaluates (nixos/tests/rancher/default.nix filters the versions it tests the same way).
  usable = attr: builtins.hasAttr attr pkgs && (builtins.tryEval pkgs.${attr}).success;

  availableK3s = builtins.filter (
    attr: builtins.match "k3s_[0-9]+_[0-9]+" attr != null && usable attr
  ) (builtins.attrNames pkgs);

  k3sPackage =
    if k3sVersion == "" then
      pkgs.k3s
    else if usable k3sAttr then
      pkgs.${k3sAttr}
    else
      fail (
        "K3s ${k3sVersion} is not available in this nixpkgs (${lib.version}): there is no pkgs.${k3sAttr}. "
        + "Available: ${lib.concatStringsSep ", " availableK3s}; "
        + "or leave k3sVersion empty for pkgs.k3s (${pkgs.k3s.version})."
      );

  # The air-gap image tarball (k3s-airgap-images-<arch>.tar.zst, a fetchurl of the K3s
  # release asset). pkgs/applications/networking/cluster/k3s/builder.nix passes it through
  # as `airgap-images`, and every entry of the version's images-versions.json as an
  # attribute of the same name ("airgap-images-amd64" or "airgap-images-amd64-tar-zst",
  # depending on the release).
  imageArch =
    {
      x86_64-linux = "amd64";
      aarch64-linux = "arm64";
    }
    .${pkgs.stdenv.hostPlatform.system} or null;

  airgapTarball =
    k3sPackage.airgap-images or (
      if imageArch == null then
        null
      else
        k3sPackage."airgap-images-${imageArch}-tar-zst" or k3sPackage."airgap-images-${imageArch}" or null
    );

  checkedAirgapTarball =
    if airgapTarball != null then
      airgapTarball
    else
      fail "the K3s package ${k3sPackage.name} comes without air-gap images; build with airgapImages = false (the guest then pulls images from the internet) or use a newer nixpkgs";

  # --- K3s arguments -------------------------------------------------------------------

  k3sFlags = [
    # The kubeconfig is read over SSH as root; nobody else needs it.
    "--write-kubeconfig-mode=0600"
  ]
  ++ map (component: "--disable=${component}") disable
  ++ extraK3sFlags;
  # No --tls-san=127.0.0.1: the API server's certificate always covers 127.0.0.1 and
  # localhost (the kubeconfig K3s writes points at https://127.0.0.1:6443), which is the
  # address the host reaches through its 127.0.0.1:<port> forward.

  imageDir = "/var/lib/rancher/k3s/agent/images";

  # Images named at build time. A store path (a dockerTools output) is used as it is; any
  # other file is copied into the store, under a name that keeps the ending K3s goes by.
  imageEnding = path: builtins.head (builtins.match ".*(\\.(tar|tar\\.gz|tgz|tar\\.zst|tzst|tar\\.bz2|tbz|tar\\.lz4))" path);
  preloadedImage =
    path:
    if lib.hasPrefix "${builtins.storeDir}/" path then
      builtins.storePath path
    else
      builtins.path {
        path = /. + path;
        name = "k3s-vm-preload-image${imageEnding path}";
      };
  # One link per archive, named after it (index first, so two archives of the same name both count).
  preloadRules = lib.imap0 (index: path: {
    name = "${imageDir}/k3s-vm-${toString index}-${baseNameOf path}";
    value."L+".argument = "${preloadedImage path}";
  }) preloadImages;

  # The Nix store image of the snapshot section below, built once per build (qemu-vm.nix's
  # recipe, run by its run script at every start, moved into a derivation). Its closure is
  # the system's plus the registration qemu-vm.nix passes on the kernel command line
  # (regInfo: closureInfo of virtualisation.additionalPaths, the same derivation).
  # tar's --hard-dereference: files the host's store has hard-linked to each other (store
  # optimisation) go into the archive, and so into the image, as files of their own, so the
  # image is the same with or without that optimisation: the aim of nixpkgs pull request
  # 395494, which passes mkfs.erofs its flag of the same name. Done here in tar, whose flag
  # writes every hard-linked file in full instead of a link entry (checked with GNU tar
  # 1.34), whatever mkfs.erofs makes of link entries in a tar stream.
  storeImage =
    pkgs.runCommand "k3s-vm-nix-store-image"
      {
        nativeBuildInputs = [
          pkgs.gnutar
          pkgs.erofs-utils
        ];
      }
      ''
        mkdir -p $out
        tar --create \
          --absolute-names \
          --verbatim-files-from \
          --hard-dereference \
          --transform 'flags=rSh;s|/nix/store/||' \
          --transform 'flags=rSh;s|~nix~case~hack~[[:digit:]]\+||g' \
          --files-from ${
            pkgs.closureInfo {
              rootPaths = [
                config.system.build.toplevel
                (pkgs.closureInfo { rootPaths = config.virtualisation.additionalPaths; })
              ];
            }
          }/store-paths \
          | mkfs.erofs \
            --quiet \
            --force-uid=0 \
            --force-gid=0 \
            -L nix-store \
            -U eb176051-bd15-49b7-9e6b-462e0b467019 \
            -T 0 \
            --tar=f \
            $out/store.img
      '';
in
{
  # system.build.vm (bin/run-<name>-vm) comes from this module, as in <nixpkgs/nixos>'s
  # `vm` attribute; it overrides the lib.mkDefault of virtualisation/build-vm.nix.
  imports = [ "${modulesPath}/virtualisation/qemu-vm.nix" ];

  # --- Machine ---------------------------------------------------------------------------

  # qemu-vm.nix names the script run-${config.system.name}-vm, and system.name defaults
  # to the host name. K3s registers the node under this name too.
  networking.hostName = name;

  virtualisation = {
    cores = cpus;
    memorySize = memoryMiB;
    # Used only when the run script creates NIX_DISK_IMAGE (it never resizes one).
    diskSize = diskSizeMiB;
    # qemu-vm.nix: adds -nographic and reverses virtualisation.qemu.consoles so that
    # ttyS0 is the primary console; kernel, systemd and getty output therefore goes to
    # the serial port, which -nographic puts on QEMU's stdout (the serial log). No
    # display means no display-driven audio backend either.
    graphics = false;
    # qemu-vm.nix adds no sound device, but the PC machine has a built-in speaker and
    # QEMU may probe host audio backends (PulseAudio, ALSA, ...) and log errors. `-audio
    # none` makes "none" the default backend (the model-less form needs QEMU 8.2+; 9.0 is
    # required here to be safe).
    qemu.options = lib.optional (lib.versionAtLeast (lib.getVersion config.virtualisation.qemu.package) "9.0") "-audio none";
    # No 9p share is left (the store is a disk image, see "Snapshots" below); should a module
    # add one, this applies. Over 9p the Nix store (K3s, its ~230 MiB air-gap image tarball)
    # was read with a packet size that caps each read; qemu-vm.nix's default is 16384
    # ("Increasing this should increase performance significantly, at the cost of higher
    # RAM usage"). 512000 bytes is the Linux virtio 9p transport's limit (125 pages);
    # a kernel clamps anything larger to its limit.
    msize = 512000;
    # offline: qemu-vm.nix adds `restrict=on,` to `-netdev user,id=user.0,...` ("the guest
    # will be isolated ... This option does not affect any explicitly set forwarding
    # rules"), and the launcher's hostfwd= rules, appended to the same -netdev through
    # $QEMU_NET_OPTS, are such rules: the API and SSH stay reachable from the host, while
    # the guest reaches neither the internet nor the host. Read in nixpkgs'
    # nixos/modules/virtualisation/qemu-vm.nix at 00008e8eb762c5def2670c20231de50db9bb75b3.
    restrictNetwork = offline;
    # Host port forwards are NOT declared here (virtualisation.forwardPorts): qemu-vm.nix
    # builds `-netdev user,id=user.0,<forwardPorts>"$QEMU_NET_OPTS"`, so the launcher
    # supplies hostfwd=tcp:127.0.0.1:<port>-:6443 and -:22 at run time.
  };

  # DHCP on the QEMU user network (eth0, since qemu-vm.nix turns off predictable interface
  # names) only: by default dhcpcd would also try the cni0, flannel.1 and veth* links
  # K3s creates.
  networking.useDHCP = false;
  networking.interfaces.eth0.useDHCP = true;

  # The QEMU user network accepts nothing but the launcher's forwards (bound to the host's
  # 127.0.0.1), so the guest firewall adds no protection here, while with it on, pods
  # could not reach the node itself (API server on 6443, kubelet on 10250 for
  # metrics-server). It is therefore off by default. Should a module turn it on, the API
  # and SSH ports stay open and the pod network is trusted, as the K3s documentation asks
  # for (nixpkgs' pkgs/applications/networking/cluster/k3s/docs/USAGE.md opens 6443;
  # nixos/tests/rancher/multi-node.nix disables the firewall on its servers).
  networking.firewall = {
    enable = lib.mkDefault false;
    allowedTCPPorts = [
      22
      6443
    ];
    trustedInterfaces = [
      "cni0"
      "flannel.1"
    ];
  };

  # Controllers and test workloads watch many files; the kernel's defaults (128 instances)
  # run out quickly. boot.kernel.sysctl keeps one value per key, so the values are at least
  # as high as any default NixOS itself may set with lib.mkDefault.
  boot.kernel.sysctl = {
    "fs.inotify.max_user_instances" = 524288;
    "fs.inotify.max_user_watches" = 524288;
  };

  # --- Snapshots: nothing 9p, no writable drive without snapshot support ----------------
  #
  # k3s-vm saves the ready VM as a QEMU internal snapshot (savevm, restored with -loadvm;
  # K3S_VM_SNAPSHOT). QEMU refuses to save while a 9p share is mounted ("Migration is disabled
  # when VirtFS export path '...' is mounted in the guest using mount_tag '...'") and while a
  # writable drive cannot hold a snapshot ("Device 'drive2' is writable but does not support
  # snapshots"): both checked with QEMU 7.2. Read in nixpkgs'
  # nixos/modules/virtualisation/qemu-vm.nix at 00008e8eb762c5def2670c20231de50db9bb75b3:
  #  - virtualisation.sharedDirectories mounts three 9p shares: nix-store (the host's
  #    /nix/store, while mountHostNixStore, whose default is !useNixStoreImage &&
  #    !useBootLoader), xchg and shared (both $TMPDIR/xchg unless SHARED_DIR is set);
  #  - useNixStoreImage = true replaces the store share with an erofs image, but that image
  #    is made "just-in-time right before the VM is started" by the run script (tar of the
  #    closure piped into mkfs.erofs, into $TMPDIR/store.img) at every start, a restore
  #    included, and its drive is writable raw, which savevm refuses.
  # So the store image is built here instead, once per build, with the same recipe (same
  # label, UUID and flags, so the guest's fileSystems are the ones qemu-vm.nix would make),
  # and attached read-only; QEMU leaves read-only drives out of snapshots. The shares go.
  # Cost: at build time one more derivation, an uncompressed erofs image of the whole closure
  # (K3s, its air-gap images, the system; roughly the closure's size in the store, written
  # once per changed build), instead of nothing with 9p; at run time nothing, and reads from
  # the store no longer go through 9p. Not measured here: no nixpkgs on the machines this is
  # developed on (docs/snapshots.md has the procedure).
  virtualisation.mountHostNixStore = false;
  virtualisation.useNixStoreImage = false;
  virtualisation.writableStore = false;
  # xchg and shared: the fixture never uses them (SSH is its way in).
  virtualisation.sharedDirectories = lib.mkForce { };
  virtualisation.fileSystems = {
    # A larger diskSizeMiB reaches an existing disk: k3s-vm grows the image (qemu-img resize)
    # before the boot, and the root file system grows to it here. Read in nixpkgs'
    # nixos/modules/virtualisation/qemu-vm.nix at 00008e8eb762c5def2670c20231de50db9bb75b3:
    # the run script makes the root disk with createEmptyFilesystemImage (mkfs.ext4 over the
    # whole image, no partition table) and "/" is { device = cfg.rootDevice; fsType = "ext4"; }
    # in virtualisation.fileSystems, which this definition merges into; and in
    # nixos/modules/tasks/filesystems.nix at 0148e16d1446003704803ecabb5a00cfea7d8568:
    # autoResize grows an ext4 file system "to its maximum size before being mounted", for
    # file systems mounted during early boot (systemd stage 1: the x-systemd.growfs option).
    # A disk that already fills its image is left as it is.
    "/".autoResize = true;
    "/nix/.ro-store" = {
      device = "/dev/disk/by-label/nix-store";
      fsType = "erofs";
      neededForBoot = true;
      options = [ "ro" ];
    };
    "/nix/store" = {
      device = "/nix/.ro-store";
      options = [ "bind" ];
      neededForBoot = true;
    };
  };
  # drive1 stays the root disk (src/qemu/disk.ts names its format by that id), as qemu-vm.nix
  # defines it; drive2 is the store image, read-only.
  virtualisation.qemu.drives = lib.mkForce [
    {
      name = "root";
      file = ''"$NIX_DISK_IMAGE"'';
      driveExtraOpts.cache = "writeback";
      driveExtraOpts.werror = "report";
      deviceExtraOpts.bootindex = "1";
      deviceExtraOpts.serial = "root";
    }
    {
      name = "nix-store";
      file = "${storeImage}/store.img";
      driveExtraOpts.format = "raw";
      driveExtraOpts.readonly = "on";
      deviceExtraOpts.bootindex = "2";
    }
  ];

  # --- Time ------------------------------------------------------------------------------
  #
  # qemu-vm.nix turns systemd-timesyncd off ("it should get the correct time from KVM"),
  # and the guest may have no internet for NTP anyway. KVM's clock keeps ticking while the
  # VM runs, but when the host sleeps the guest's wall clock falls behind by the time slept,
  # which breaks TLS and token validity between host and cluster. Two offline sources of
  # the host's time exist:
  #  - under KVM, the ptp_kvm driver's /dev/ptp0, which reads the host's clock through a
  #    hypercall: chrony disciplines the clock from it (refclock PHC) and steps it after a
  #    sleep (makestep with no limit);
  #  - under TCG, or when the host's clock source does not allow it (ptp_kvm then fails to
  #    load), the emulated RTC, which QEMU derives from the host's wall clock: a timer
  #    compares it with the system clock every 30 s and steps the clock when they differ
  #    by 2 s or more.
  # Exactly one of the two runs, decided by whether /dev/ptp0 exists.

  # ptp_kvm has no device alias to autoload it, so the units below pull in systemd's
  # modprobe@ptp_kvm.service (the template qemu-vm.nix also relies on, for
  # modprobe@9pnet_virtio). It runs `modprobe -abq` with failures ignored, so a failed load
  # without KVM marks nothing failed; devtmpfs creates /dev/ptp0 before modprobe returns.
  # Conditions are checked when a unit starts, i.e. after that load.
  systemd.services.chronyd = {
    wants = [ "modprobe@ptp_kvm.service" ];
    after = [ "modprobe@ptp_kvm.service" ];
    unitConfig.ConditionPathExists = "/dev/ptp0";
  };

  services.chrony = {
    enable = true;
    # No network time servers: the host's clock is the reference.
    servers = [ ];
    extraConfig = ''
      refclock PHC /dev/ptp0 poll 2
      makestep 1 -1
    '';
  };
  # nixos/modules/services/networking/ntp/chrony.nix lets chronyd open char-ptp devices
  # (DeviceAllow); chronyd opens its reference clocks before it drops root.

  systemd.services.k3s-vm-rtc-clock = {
    description = "Set the clock from the RTC when it has drifted (no KVM PTP clock)";
    wants = [ "modprobe@ptp_kvm.service" ];
    after = [ "modprobe@ptp_kvm.service" ];
    unitConfig.ConditionPathExists = "!/dev/ptp0";
    path = [
      pkgs.coreutils
      pkgs.util-linux
    ];
    serviceConfig.Type = "oneshot";
    # The RTC keeps UTC (QEMU's default -rtc base=utc, NixOS's hardwareClockInLocalTime
    # default false); since_epoch is its time in whole seconds.
    script = ''
      rtc=$(cat /sys/class/rtc/rtc0/since_epoch) || exit 0
      now=$(date +%s)
      drift=$(( rtc > now ? rtc - now : now - rtc ))
      if [ "$drift" -ge 2 ]; then
        echo "the system clock is $drift s away from the RTC; setting it from the RTC"
        hwclock --hctosys --utc
      fi
    '';
  };
  systemd.timers.k3s-vm-rtc-clock = {
    wantedBy = [ "timers.target" ];
    timerConfig = {
      OnBootSec = "30s";
      OnUnitActiveSec = "30s";
      AccuracySec = "1s";
    };
  };

  # QEMU's guest agent, on the virtio-serial port org.qemu.guest_agent.0 that k3s-vm's launch
  # adds (udev starts it when the port appears): after a rewind the host sets the clock
  # through it (guest-set-time), without an SSH handshake. nixpkgs' qemu-ga runs
  # /run/current-system/sw/bin/hwclock (util-linux) to write the RTC after it.
  services.qemuGuest.enable = true;

  # --- K3s -------------------------------------------------------------------------------

  services.k3s = {
    enable = true;
    role = "server";
    package = k3sPackage;
    # One ExecStart= word per flag, quoted and escaped so that spaces, quotes, backslashes,
    # semicolons, % and $ reach K3s unchanged (see parameters.nix).
    # A list: services.k3s.extraFlags takes `either str (listOf str)` in the rancher module
    # (services/cluster/rancher/default.nix) and a list in the 24.11-era one
    # (services/cluster/k3s/default.nix; nixos/tests/k3s/airgap-images.nix passes one);
    # lists from several modules are concatenated. --disable is given as a flag rather
    # than through services.k3s.disable, which only the rancher module has.
    extraFlags = k3sArguments k3sFlags;
  };
  # The module puts the K3s package, whose bin/ has kubectl, crictl and ctr (links to k3s),
  # on the system PATH; as root they default to /etc/rancher/k3s/k3s.yaml. Its unit is
  # k3s.service, so `systemctl is-active k3s` and `journalctl -u k3s` work as they are.

  # Air-gap images: K3s imports every tarball in its images directory before it starts the
  # packaged components, so pause, coredns, local-path-provisioner, metrics-server (and
  # traefik, klipper-lb, helm) need no registry. This is the link that the newer
  # services.k3s.images option (nixos/modules/services/cluster/rancher/default.nix; also
  # used with `config.services.k3s.package.airgap-images` in nixos/tests/rancher/
  # airgap-images.nix) creates, written as a tmpfiles rule so it works on every release,
  # including those whose K3s module lacks that option. systemd-tmpfiles-setup runs early
  # in boot, long before k3s.service, and creates the parent directories.
  # (optionalAttrs, not mkIf: the link's name is only computed when the images are wanted.)
  systemd.tmpfiles.settings =
    lib.optionalAttrs airgapImages {
      "10-k3s-vm-airgap-images"."${imageDir}/${checkedAirgapTarball.name}"."L+".argument =
        "${checkedAirgapTarball}";
    }
    # Images named at build time (the preloadImages option), linked the way nixpkgs'
    # services.k3s.images does it: nixos/modules/services/cluster/rancher/default.nix at
    # 4c53d514eb4a4b055dd757808acafadc7ad27436, `mkImageRule`, a tmpfiles "L+" rule
    # "${imageDir}/${image.name}" → the image. K3s imports every archive in that directory
    # at each start, before the kubelet runs pods, so pods use them with
    # imagePullPolicy IfNotPresent or Never. Written here rather than through
    # services.k3s.images because the 24.11-era K3s module has no such option.
    // lib.optionalAttrs (preloadImages != [ ]) {
      "11-k3s-vm-preload-images" = builtins.listToAttrs preloadRules;
    };

  # --- SSH -------------------------------------------------------------------------------

  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  # The instance's key is not part of the build, so that every state directory with the same
  # options shares one system (and one closure-sized store image): the launcher puts it on the
  # kernel command line through the run script's QEMU_KERNEL_PARAMS, as
  # k3s_vm.ssh_key=<base64 of the key line> (src/guest/keys.ts), and this unit writes it where
  # sshd reads it, before sshd starts, at every boot. /run is a fresh tmpfs each boot, so a key
  # pair made anew replaces the old one; a snapshot restore keeps the key its boot was given
  # (src/qemu/snapshot.ts keys the snapshot by it). sshd's StrictModes wants the file and its
  # folder owned by root and not writable by others: 0755 and 0644.
  systemd.services.k3s-vm-ssh-key = {
    description = "k3s-vm: root's SSH key from the kernel command line";
    wantedBy = [ "sshd.service" ];
    before = [ "sshd.service" ];
    unitConfig.DefaultDependencies = false;
    after = [ "local-fs.target" ];
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
    };
    path = [ pkgs.coreutils ];
    script = ''
      install -d -m 0755 /run/k3s-vm
      key=
      for word in $(cat /proc/cmdline); do
        case "$word" in
          k3s_vm.ssh_key=*) key=''${word#k3s_vm.ssh_key=} ;;
        esac
      done
      umask 022
      if [ -n "$key" ] && printf '%s' "$key" | base64 -d > /run/k3s-vm/authorized_keys.new; then
        echo "k3s-vm: root's SSH key from the kernel command line"
      else
        echo "k3s-vm: no SSH key (k3s_vm.ssh_key=) on the kernel command line"
        : > /run/k3s-vm/authorized_keys.new
      fi
      mv /run/k3s-vm/authorized_keys.new /run/k3s-vm/authorized_keys
    '';
  };
  # Read besides the usual files (the option is a list that NixOS merges with its defaults).
  services.openssh.authorizedKeysFiles = [ "/run/k3s-vm/authorized_keys" ];
  # A key baked into the build, for those who build nix/ themselves; k3s-vm passes none.
  users.users.root.openssh.authorizedKeys.keys = lib.optional (sshPublicKey != "") sshPublicKey;

  # --- Build size and time -----------------------------------------------------------------

  # The manuals (the NixOS one in particular) are the slowest part of building a system
  # that nothing is cached for, and nobody reads them in this guest.
  documentation.enable = false;
  documentation.nixos.enable = false;

  # The guest is created from scratch on this release; nothing stateful depends on it.
  system.stateVersion = lib.mkDefault "24.11";
}
