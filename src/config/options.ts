// What a user can set (options, or K3S_VM_* variables) and what the config layer resolves it to.

/** How the VM's CPU is provided: hardware virtualisation, software emulation, or decided by a probe. */
export type Accel = 'auto' | 'kvm' | 'tcg';

/** Options given in code; an option given here wins over its K3S_VM_* variable, where it has one (the README lists them). */
export interface K3sVmOptions {
  /** Project root the defaults are relative to. @default the nearest folder upwards with a package.json */
  readonly projectRoot?: string;
  /** State directory of the instance (`K3S_VM_DIR`). @default '<projectRoot>/.k3s-vm' */
  readonly dir?: string;
  /** VM name, also its hostname (`K3S_VM_NAME`). @default 'k3s-vm' */
  readonly name?: string;
  /** Virtual CPUs (`K3S_VM_CPUS`). @default 2 */
  readonly cpus?: number;
  /** Memory in MiB (`K3S_VM_MEMORY`). @default 4096 */
  readonly memoryMiB?: number;
  /** Size of the persistent disk in MiB (`K3S_VM_DISK_SIZE`). @default 20480 */
  readonly diskSizeMiB?: number;
  /** Accelerator (`K3S_VM_ACCEL`). @default 'auto' */
  readonly accel?: Accel;
  /** Keep the VM running after the test run (`K3S_VM_KEEP`). @default false */
  readonly keep?: boolean;
  /** Host port forwarded to the API server (`K3S_VM_API_PORT`). @default a free port chosen at start */
  readonly apiPort?: number;
  /** Host port forwarded to SSH (`K3S_VM_SSH_PORT`). @default a free port chosen at start */
  readonly sshPort?: number;
  /** Overall deadline for boot and readiness, in seconds (`K3S_VM_TIMEOUT`). @default 300, tripled under emulation */
  readonly timeoutSeconds?: number;
  /** Nix expression (file or directory) that builds the VM (`K3S_VM_NIX`). @default the package's own nix/ */
  readonly nix?: string;
  /**
   * The nixpkgs the package's nix/ builds from (`K3S_VM_NIXPKGS`): a channel name such as
   * 'nixos-25.05', a path, an https URL of a tarball, or '<nixpkgs>' for the one on NIX_PATH.
   * @default the revision the package pins
   */
  readonly nixpkgs?: string;
  /** K3s version for the package's nix/, such as '1.31' (`K3S_VM_K3S`). @default nixpkgs' default K3s */
  readonly k3sVersion?: string;
  /** Cut the guest off from the network; the forwarded ports still work (`K3S_VM_OFFLINE`). @default false */
  readonly offline?: boolean;
  /** Extra flags for the K3s server (passed to the Nix expression). @default [] */
  readonly extraK3sFlags?: readonly string[];
  /** K3s components to disable (`--disable=…`). @default ['traefik'] */
  readonly disable?: readonly string[];
  /** Preload K3s's air-gap images into the VM, so the cluster needs no registry. @default true */
  readonly airgapImages?: boolean;
  /** Extra NixOS modules (paths, relative to the project root) added to the VM. @default [] */
  readonly extraModules?: readonly string[];
  /** Extra kernel command-line parameters for the guest. @default [] */
  readonly kernelParams?: readonly string[];
  /** Print debug lines (`K3S_VM_DEBUG`). @default false */
  readonly debug?: boolean;
  /**
   * Run against an existing cluster instead of a VM: the path of its kubeconfig
   * (`K3S_VM_KUBECONFIG`). No Nix, no QEMU, no VM state. @default undefined (boot a VM)
   */
  readonly kubeconfig?: string;
  /** The kubeconfig context of the existing cluster (`K3S_VM_CONTEXT`). @default the kubeconfig's current context */
  readonly context?: string;
  /**
   * Context names an existing cluster may have, as patterns with `*` as a wildcard
   * (`K3S_VM_ALLOW_CONTEXTS`, comma-separated). Any other context is refused, so that a
   * production kubeconfig is never used by accident. @default [] (none)
   */
  readonly allowContexts?: readonly string[];
  /**
   * On an existing cluster, the namespaces of a run that stopped renewing its heartbeat this
   * long ago (a CI job killed halfway) are deleted at the next start (`K3S_VM_SWEEP_AFTER`). @default 600
   */
  readonly sweepAfterSeconds?: number;
  /**
   * Image archives (docker-archive from `docker save`/`podman save` or nixpkgs' dockerTools, or an
   * OCI archive; gzipped or not) imported into K3s's containerd after readiness
   * (`K3S_VM_IMAGES`, comma-separated). An archive this VM has imported before is skipped by
   * its sha256. Pods use the images with `imagePullPolicy: IfNotPresent` or `Never`. @default []
   */
  readonly images?: readonly string[];
  /**
   * Manifest files and directories (a directory's .yaml, .yml and .json files, sorted) applied
   * after the images, in order, by server-side apply as field manager `k3s-vm`
   * (`K3S_VM_MANIFESTS`, comma-separated). A file this VM has applied before, unchanged, is
   * skipped; on an existing cluster every file is applied. @default []
   */
  readonly manifests?: readonly string[];
  /** After applying manifests, wait until their Deployments have rolled out (`K3S_VM_WAIT_FOR_ROLLOUT`). @default false */
  readonly waitForRollout?: boolean;
  /**
   * When a test that used a namespace fixture fails, collect that namespace's events, pod
   * states and container log tails before it is deleted and attach them to the test's report
   * (`K3S_VM_DIAGNOSTICS`). @default true
   */
  readonly diagnostics?: boolean;
  /** Keep a failed test's namespace for inspection instead of deleting it; its name is printed (`K3S_VM_KEEP_FAILED_NAMESPACES`). @default false */
  readonly keepFailedNamespaces?: boolean;
  /**
   * Image archives built into the VM by Nix (nixpkgs' `services.k3s.images`): K3s imports them
   * at every start (`K3S_VM_PRELOAD_IMAGES`, comma-separated). A change means a new build. @default []
   */
  readonly preloadImages?: readonly string[];
  /**
   * Save the VM once the cluster is ready and, at later starts of the unchanged VM, restore
   * that instead of booting (`K3S_VM_SNAPSHOT`). A restore returns the disk to the saved
   * state: what earlier runs wrote to the cluster is gone. @default false
   */
  readonly snapshot?: boolean;
  /**
   * `'file'`: the Vitest adapter returns the VM to its snapshot before each test file
   * (`K3S_VM_REWIND=file`), so that nothing one file created, namespaced or cluster-scoped,
   * is seen by the next. Needs `snapshot`, test files run one at a time, and no other run
   * using the VM. @default 'off'
   */
  readonly rewind?: 'off' | 'file';
  /** The nix-build program. @default 'nix-build' from PATH */
  readonly nixBuild?: string;
}

/** Every option resolved, validated and absolute. Produced only by resolveConfig. */
export interface ResolvedConfig {
  readonly projectRoot: string;
  readonly dir: string;
  readonly name: string;
  readonly cpus: number;
  readonly memoryMiB: number;
  readonly diskSizeMiB: number;
  readonly accel: Accel;
  readonly keep: boolean;
  /** A fixed port, or undefined to choose a free one at start. */
  readonly apiPort: number | undefined;
  readonly sshPort: number | undefined;
  /** Undefined means "the default for the accelerator in use". */
  readonly timeoutSeconds: number | undefined;
  /** Absolute path of the Nix expression (file or directory). */
  readonly nix: string;
  /** '' for the pinned revision; otherwise a channel name, an absolute path, a URL or '<nixpkgs>'. */
  readonly nixpkgs: string;
  /** Normalised as 'MAJOR_MINOR' (like nixpkgs' k3s_1_31), or '' for the default. */
  readonly k3sVersion: string;
  readonly offline: boolean;
  readonly snapshot: boolean;
  readonly rewind: 'off' | 'file';
  readonly extraK3sFlags: readonly string[];
  readonly disable: readonly string[];
  readonly airgapImages: boolean;
  /** Absolute paths. */
  readonly extraModules: readonly string[];
  readonly kernelParams: readonly string[];
  readonly debug: boolean;
  /** Absolute path of an existing cluster's kubeconfig, or undefined to boot a VM. */
  readonly kubeconfig: string | undefined;
  readonly context: string | undefined;
  readonly allowContexts: readonly string[];
  readonly sweepAfterSeconds: number;
  /** Absolute paths. */
  readonly images: readonly string[];
  /** Absolute paths. */
  readonly manifests: readonly string[];
  readonly waitForRollout: boolean;
  readonly diagnostics: boolean;
  readonly keepFailedNamespaces: boolean;
  /** Absolute paths. */
  readonly preloadImages: readonly string[];
  readonly nixBuild: string;
  /** Per-user cache (KVM probe results). */
  readonly cacheDir: string;
  /**
   * How a message names each option: as the user gave it (`--disk-size`, `K3S_VM_DISK_SIZE`,
   * `option diskSizeMiB`), or by its variable when it was left to its default. A remedy says
   * "raise --timeout" to someone who passed the flag.
   */
  readonly names: Readonly<Record<keyof K3sVmOptions, string>>;
}
