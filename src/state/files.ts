// The instance directory's files: every name the library reads or writes there is one of these.

export const files = {
  /** Private Ed25519 key (OpenSSH format, 0600) the guest trusts for root. */
  sshKey: 'ssh/id_ed25519',
  /** Public half of sshKey, baked into the VM image. */
  sshPublicKey: 'ssh/id_ed25519.pub',
  /** Nix out-link of the built VM; also a GC root, so nix-collect-garbage keeps the build. */
  buildLink: 'result',
  /** Hash of the build inputs and store path of the last successful build. */
  buildStamp: 'build.json',
  /** The VM's persistent disk (qcow2): cluster state lives here. */
  disk: 'disk.qcow2',
  /** What the disk was made for (node name, K3s version, size): a later boot that cannot use it is refused. */
  diskRecord: 'disk.json',
  /**
   * What the ready-state snapshot inside the disk (QEMU internal snapshot "k3s-vm-ready") was
   * saved from. Written only after a save completes: a snapshot without it is not trusted.
   */
  snapshotRecord: 'snapshot.json',
  /** Named snapshots (`k3s-vm snapshot save NAME`): one record NAME.json each, written after its save, like snapshotRecord. */
  snapshotsDir: 'snapshots',
  /** The QEMU process id, written atomically once QEMU is spawned. */
  pid: 'qemu.pid',
  /** QMP control socket (under the temporary directory instead when this path is too long for a socket). */
  qmp: 'qmp.sock',
  /** The host's end of QEMU's guest agent channel, beside the QMP socket (qemu/guest-agent.ts). */
  guestAgent: 'qga.sock',
  /** The VM's serial console, appended to across boots. */
  serialLog: 'serial.log',
  /** Host ports, accelerator and start time of the running VM. */
  runtime: 'runtime.json',
  /** Kubeconfig for the running VM (0600, JSON, which kubectl reads as YAML), pointing at the forwarded API port. */
  kubeconfig: 'kubeconfig',
  /** Exclusive lock held while the VM is started, stopped or reset. */
  lock: 'lock',
  /** One file per process using the VM; the VM is stopped only when none is left. */
  leasesDir: 'leases',
  /** The VM's scratch directory (TMPDIR of the run script). */
  tmpDir: 'tmp',
  /** Keeps the whole directory out of git even if the project's .gitignore misses it. */
  gitignore: '.gitignore',
} as const;

/** What a running VM adds and a stopped one must not leave: removed together after every stop. */
export const runtimeFiles = [files.pid, files.runtime, files.kubeconfig, files.qmp, files.guestAgent] as const;

/** Unix domain socket paths are limited to 108 bytes including the terminating NUL. */
export const maxSocketPathBytes = 107;
