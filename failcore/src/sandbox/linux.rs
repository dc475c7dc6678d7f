//! The Linux sandbox: Landlock, seccomp, rlimits, a pids cgroup and a process group.
//!
//! Where the walls go up: in the child, between `fork` and `exec`, through `CommandExt::pre_exec`, rather
//! than in a helper binary re-executed for each command. Everything that allocates, opens paths or can fail
//! in an interesting way (the Landlock ruleset and its path descriptors, the seccomp BPF programs, the
//! cgroup and its `cgroup.procs` descriptor, the environment) is built in the parent before the fork; the
//! child only makes system calls (`write`, `setrlimit`, `prctl`, `landlock_restrict_self`, `seccomp`),
//! which are async-signal-safe, so forking a multi-threaded process is sound. A helper binary would have
//! to be found, trusted and kept in step with the library on every installation, for no gain in safety:
//! the restrictions apply to the exec'd program either way, and they survive `exec` (Landlock domains,
//! seccomp filters, rlimits and no_new_privs are all inherited).

use super::{Captured, Command, ExecOutput, Exit, Kernel, Plan, ProcessLimit, SandboxApplied};
use crate::policy::{Network, SandboxSpec};
use crate::Error;
use landlock::{
    Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort,
    PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetStatus,
    Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long the output streams may stay open after the command and its group are gone.
const READ_GRACE: Duration = Duration::from_secs(2);

#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

/// What this kernel offers, probed once.
pub(crate) fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| Kernel {
        landlock_abi: landlock_abi(),
        seccomp: seccomp_works(),
        pids_cgroup: pids_cgroup(),
        privileged: privileged(),
        mount_namespace: mount_namespace_works(),
    })
}

/// The kernel's Landlock ABI, as the landlock crate reports it. Landlock domains and no_new_privs belong
/// to a thread, so a throwaway thread restricts itself and reads the status; the rest of the process is
/// untouched.
fn landlock_abi() -> u32 {
    std::thread::spawn(|| -> Option<u32> {
        let status = Ruleset::default()
            .handle_access(AccessFs::Execute)
            .ok()?
            .create()
            .ok()?
            .restrict_self()
            .ok()?;
        match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => {
                effective_abi.to_string().parse().ok()
            }
            _ => None,
        }
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(0)
}

/// Whether a seccomp filter can be installed: tried on a throwaway thread (filters installed without
/// `TSYNC` bind only the calling thread).
fn seccomp_works() -> bool {
    std::thread::spawn(|| -> bool {
        let Ok(arch) = target_arch() else {
            return false;
        };
        let rules = BTreeMap::from([(libc::SYS_io_uring_setup, Vec::new())]);
        let Ok(filter) = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        ) else {
            return false;
        };
        let Ok(program) = BpfProgram::try_from(filter) else {
            return false;
        };
        seccompiler::apply_filter(&program).is_ok()
    })
    .join()
    .unwrap_or(false)
}

fn target_arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| format!("no seccomp support for {}", std::env::consts::ARCH))
}

/// Whether the kernel exempts this user from `RLIMIT_NPROC`: root, or a holder of `CAP_SYS_RESOURCE` or
/// `CAP_SYS_ADMIN`.
fn privileged() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: assume the limit would not bind
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let root = field("Uid:")
        .and_then(|v| v.split_whitespace().next())
        .is_none_or(|uid| uid == "0");
    let caps = field("CapEff:")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(u64::MAX);
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_SYS_RESOURCE: u64 = 1 << 24;
    root || caps & (CAP_SYS_ADMIN | CAP_SYS_RESOURCE) != 0
}

/// Whether this process can give a command a mount namespace of its own with read-only mounts: tried in a
/// forked child (a user namespace can only be entered by a single-threaded process), which binds the
/// temporary directory as a writable root would be.
fn mount_namespace_works() -> bool {
    let Ok(isolation) = Isolation::new(&[std::env::temp_dir()], None) else {
        return false;
    };
    // SAFETY: the child makes only system calls (see `Isolation::enter`) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = i32::from(isolation.enter().is_err());
        // SAFETY: ends the forked child without running this process's exit handlers.
        unsafe { libc::_exit(code) };
    }
    if pid < 0 {
        return false;
    }
    let mut status = 0;
    loop {
        // SAFETY: a valid pointer to a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

/// The mount namespace of a command, prepared before the fork: every mount read-only but bind mounts of
/// the writable roots. Landlock has no right for a file's mode, owner, times or extended attributes; a
/// read-only mount refuses all of them (`EROFS`), whoever asks.
struct Isolation {
    /// For a process without `CAP_SYS_ADMIN`: the contents of `uid_map` and `gid_map` of a user namespace
    /// that maps the user to itself.
    maps: Option<(Vec<u8>, Vec<u8>)>,
    /// The writable roots, absolute, NUL-terminated.
    binds: Vec<CString>,
    /// The directory to change to once the mounts are made (the root): the working directory taken before
    /// them is on the mount that becomes read-only.
    cwd: Option<CString>,
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

impl Isolation {
    fn new(writable: &[PathBuf], cwd: Option<&Path>) -> io::Result<Isolation> {
        let c = |p: &Path| -> io::Result<CString> {
            let absolute = std::fs::canonicalize(p)?;
            CString::new(absolute.into_os_string().into_vec())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let maps = (!has_cap_sys_admin()).then(|| {
            // SAFETY: getuid and getgid cannot fail.
            let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
            (
                format!("{uid} {uid} 1\n").into_bytes(),
                format!("{gid} {gid} 1\n").into_bytes(),
            )
        });
        Ok(Isolation {
            maps,
            binds: writable.iter().map(|p| c(p)).collect::<io::Result<_>>()?,
            cwd: cwd.map(c).transpose()?,
        })
    }

    /// Enters the namespace. Only system calls, on memory prepared before the fork.
    fn enter(&self) -> io::Result<()> {
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let flags = if self.maps.is_some() {
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS
        } else {
            libc::CLONE_NEWNS
        };
        // SAFETY: unshare takes no pointers.
        check(unsafe { libc::unshare(flags) })?;
        if let Some((uid_map, gid_map)) = &self.maps {
            write_file(c"/proc/self/setgroups", b"deny")?;
            write_file(c"/proc/self/uid_map", uid_map)?;
            write_file(c"/proc/self/gid_map", gid_map)?;
        }
        let none = std::ptr::null::<libc::c_char>();
        // No mount made here propagates back to the namespace this process came from.
        // SAFETY: NUL-terminated strings and null pointers, as mount(2) takes them.
        check(unsafe {
            libc::mount(
                none,
                c"/".as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        })?;
        for bind in &self.binds {
            // SAFETY: as above.
            check(unsafe {
                libc::mount(
                    bind.as_ptr(),
                    bind.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            })?;
        }
        let setattr = |path: &CStr, set: u64, clear: u64, flags: libc::c_uint| {
            let attr = MountAttr {
                attr_set: set,
                attr_clr: clear,
                propagation: 0,
                userns_fd: 0,
            };
            // SAFETY: a NUL-terminated path and a pointer to a local of the size passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_mount_setattr,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    flags,
                    &attr as *const MountAttr,
                    std::mem::size_of::<MountAttr>(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        };
        setattr(c"/", MOUNT_ATTR_RDONLY, 0, AT_RECURSIVE)?;
        for bind in &self.binds {
            // A mount beneath a writable root that was read-only where it came from stays so; the root's
            // own mount is made writable either way.
            if setattr(bind, 0, MOUNT_ATTR_RDONLY, AT_RECURSIVE).is_err() {
                setattr(bind, 0, MOUNT_ATTR_RDONLY, 0)?;
            }
        }
        if let Some(cwd) = &self.cwd {
            // SAFETY: a NUL-terminated path.
            check(unsafe { libc::chdir(cwd.as_ptr()) })?;
        }
        Ok(())
    }
}

/// Writes `bytes` to the file at `path` in one call. Only system calls.
fn write_file(path: &CStr, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a valid buffer of the length passed, to the descriptor just opened.
    let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    let err = io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if written == bytes.len() as isize {
        Ok(())
    } else {
        Err(err)
    }
}

const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process holds `CAP_SYS_ADMIN` (it can make mounts without a user namespace of its own).
fn has_cap_sys_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The highest capability number this kernel knows.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(63)
}

/// Drops every capability for good: `no_new_privs`, the ambient set cleared, the bounding set emptied
/// (where this process may: it needs `CAP_SETPCAP`, which an unprivileged user has none of anyway), and
/// the effective, permitted and inheritable sets zeroed. A program run after this as root gets no
/// capability back. Only system calls.
fn drop_capabilities(last_cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; EINVAL on a kernel without ambient capabilities, which then has none to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    for cap in 0..=last_cap {
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) {
                return Err(err);
            }
        }
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: pointers to a header and two data structs, as capset(2) version 3 takes them.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, none.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A directory beneath which this process can create pids cgroups (v1 `pids` hierarchy, or v2 with the
/// pids controller enabled for children), found from /proc/self/mountinfo and /proc/self/cgroup and
/// proven by creating and removing one.
fn pids_cgroup() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(mount), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let ours = match *fstype {
            "cgroup"
                if right
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "pids")) =>
            {
                membership
                    .lines()
                    .filter_map(|l| l.split_once(':').and_then(|(_, rest)| rest.split_once(':')))
                    .find(|(ctrls, _)| ctrls.split(',').any(|c| c == "pids"))
                    .map(|(_, path)| path)
            }
            "cgroup2" => membership.lines().find_map(|l| l.strip_prefix("0::")),
            _ => None,
        };
        let Some(path) = ours else { continue };
        let relative = path.strip_prefix(root).unwrap_or(path);
        candidates.push(Path::new(mount).join(relative.trim_start_matches('/')));
    }
    candidates.into_iter().find(|base| {
        let probe = base.join(format!("failcore-probe-{}", std::process::id()));
        if std::fs::create_dir(&probe).is_err() {
            return false;
        }
        let works = probe.join("pids.max").exists();
        let _ = std::fs::remove_dir(&probe);
        works
    })
}

/// A pids cgroup of one command: removed when dropped.
struct CommandCgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork: the child writes `0` to it to join.
    procs: File,
}

impl CommandCgroup {
    fn create(base: &Path, max: u64) -> io::Result<CommandCgroup> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static SWEPT: std::sync::Once = std::sync::Once::new();
        SWEPT.call_once(|| sweep_stale(base));
        let dir = base.join(format!(
            "failcore-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir)?;
        let made = (|| {
            std::fs::write(dir.join("pids.max"), max.to_string())?;
            std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        })();
        match made {
            Ok(procs) => Ok(CommandCgroup { dir, procs }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// Removes the cgroups that processes which are gone left beneath `base` (a process killed with SIGKILL
/// never drops its commands' cgroups): their members, commands that outlived the process that started
/// them, are killed first. A cgroup of a live process, or one that cannot be emptied, is left alone.
fn sweep_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix("failcore-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| Some((pid.parse::<i32>().ok()?, n.parse::<u64>().ok()?)))
            .map(|(pid, _)| pid)
        else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let gone = owner > 0
            && unsafe { libc::kill(owner, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone {
            continue;
        }
        let dir = entry.path();
        for _ in 0..20 {
            let members = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in members.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&dir).is_ok() {
                tracing::debug!(cgroup = %dir.display(), "removed the cgroup of a process that is gone");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        // Killed members take a moment to leave; an emptied cgroup is removed, a stuck one is reported.
        for _ in 0..200 {
            for pid in self.members() {
                // SAFETY: kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(cgroup = %self.dir.display(), "could not remove the command's cgroup");
    }
}

fn abi_of(n: u32) -> ABI {
    match n {
        0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        // Every right this sandbox uses exists by ABI 7 (later ABIs add rights it does not ask for).
        _ => ABI::V7,
    }
}

/// The Landlock ruleset of a command, created in the parent. Every right asked for is a hard requirement
/// (the plan already left out what this kernel lacks), and every path is opened now: a path that vanished
/// since the policy check is an error, never a rule silently dropped.
fn ruleset(spec: &SandboxSpec, plan: &Plan) -> Result<Option<RulesetCreated>, String> {
    if !(plan.filesystem || plan.landlock_net || plan.scopes) {
        return Ok(None);
    }
    let abi = abi_of(plan.landlock_abi);
    let e = |e: landlock::RulesetError| e.to_string();
    let handled_fs = if spec.readable().is_some() {
        AccessFs::from_all(abi)
    } else {
        AccessFs::from_write(abi)
    };
    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
    if plan.filesystem {
        ruleset = ruleset.handle_access(handled_fs).map_err(e)?;
    }
    if plan.landlock_net {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(e)?;
    }
    if plan.scopes {
        let mut scopes: BitFlags<Scope> = Scope::Signal.into();
        if *spec.network() != Network::All {
            scopes |= Scope::AbstractUnixSocket;
        }
        ruleset = ruleset.scope(scopes).map_err(e)?;
    }
    let mut created = ruleset.create().map_err(e)?;
    if plan.filesystem {
        let read = AccessFs::from_read(abi) & handled_fs;
        // Device nodes are neither made nor driven beneath a writable root: a node for the terminal or the
        // kernel log would be a way out.
        let writable =
            handled_fs & !(AccessFs::MakeChar | AccessFs::MakeBlock | AccessFs::IoctlDev);
        let dev_null =
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
        let rules = spec
            .readable()
            .unwrap_or_default()
            .iter()
            .map(|p| (p.as_path(), read))
            .chain(spec.writable_roots().map(|p| (p.as_path(), writable)))
            .chain([(Path::new("/dev/null"), dev_null & handled_fs)]);
        for (path, access) in rules {
            let fd = PathFd::new(path).map_err(|err| format!("{}: {err}", path.display()))?;
            // Rights that only make sense on directories are refused on a file.
            let access = if path.is_dir() {
                access
            } else {
                access & AccessFs::from_file(abi)
            };
            created = created.add_rule(PathBeneath::new(fd, access)).map_err(e)?;
        }
    }
    if let (Network::ConnectPorts(ports), true) = (spec.network(), plan.landlock_net) {
        for port in ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(e)?;
        }
    }
    Ok(Some(created))
}

/// The seccomp programs of a command: one refusing the sockets the network setting does not allow (every
/// socket with no network, but Unix ones where the policy names some; Unix sockets with a list of ports),
/// and io_uring, which can open sockets without `socket(2)`; one refusing `setsid`/`setpgid` so that no
/// descendant leaves the process group that is killed at the timeout, device nodes (`mknod` of a
/// character or block device) and the terminal ioctls that push input into another program (`TIOCSTI`,
/// `TIOCLINUX`).
fn filters(spec: &SandboxSpec, plan: &Plan) -> Result<Vec<BpfProgram>, String> {
    let arch = target_arch()?;
    let e = |e: seccompiler::BackendError| e.to_string();
    let arg = |index: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(index, len, op, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(e)
    };
    let unix = libc::AF_UNIX as u64;
    let unix_allowed = !spec.unix_sockets().is_empty();
    let mut programs = Vec::new();
    if plan.seccomp_net {
        let sockets = match (spec.network(), unix_allowed) {
            (Network::None, false) => vec![],
            (Network::None, true) => vec![arg(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, unix)?],
            (_, false) => vec![arg(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, unix)?],
            (_, true) => Vec::new(),
        };
        let mut rules = vec![(libc::SYS_io_uring_setup, Vec::new())];
        // An empty list refuses every call; with a list of ports and Unix sockets allowed, nothing is
        // refused here.
        if !(matches!(spec.network(), Network::ConnectPorts(_)) && unix_allowed) {
            rules.push((libc::SYS_socket, sockets));
        }
        let filter = SeccompFilter::new(
            with_x32(&rules),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            arch,
        )
        .map_err(e)?;
        programs.push(BpfProgram::try_from(filter).map_err(e)?);
    }
    if plan.seccomp_group {
        let device = |index: u8| -> Result<Vec<SeccompRule>, String> {
            [libc::S_IFCHR, libc::S_IFBLK]
                .into_iter()
                .map(|kind| {
                    arg(
                        index,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT)),
                        u64::from(kind),
                    )
                })
                .collect()
        };
        let ioctls = [libc::TIOCSTI, libc::TIOCLINUX]
            .into_iter()
            .map(|request| {
                arg(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    u64::from(request as u32),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rules = vec![
            (libc::SYS_setsid, Vec::new()),
            (libc::SYS_setpgid, Vec::new()),
            (libc::SYS_mknodat, device(2)?),
            (libc::SYS_ioctl, ioctls),
        ];
        #[cfg(target_arch = "x86_64")]
        rules.push((libc::SYS_mknod, device(1)?));
        let filter = SeccompFilter::new(
            with_x32(&rules),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(e)?;
        programs.push(BpfProgram::try_from(filter).map_err(e)?);
    }
    Ok(programs)
}

/// The rules keyed by system call number, and on x86_64 also by the x32 number of each call (the same
/// number with bit 30 set, which the architecture check of the filter lets through), so that a program
/// built for x32 cannot go around them where the kernel runs x32 code.
fn with_x32(rules: &[(i64, Vec<SeccompRule>)]) -> BTreeMap<i64, Vec<SeccompRule>> {
    let mut map = BTreeMap::new();
    for (nr, rule) in rules {
        map.insert(*nr, rule.clone());
        if cfg!(target_arch = "x86_64") {
            map.insert(*nr | 0x4000_0000, rule.clone());
        }
    }
    map
}

/// The command's environment: the policy's allow-list taken from this process, then the tool's own
/// variables. Returns the variables and their sorted names.
fn environment(
    spec: &SandboxSpec,
    extra: &[(String, String)],
) -> (Vec<(OsString, OsString)>, Vec<String>) {
    let mut vars: Vec<(OsString, OsString)> = Vec::new();
    for name in &spec.env {
        match std::env::var_os(name) {
            Some(v) => vars.push((name.into(), v)),
            None if name == "PATH" => {
                vars.push((name.into(), "/usr/local/bin:/usr/bin:/bin".into()))
            }
            None => {}
        }
    }
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k.as_str());
        vars.push((k.into(), v.into()));
    }
    let mut names: Vec<String> = vars
        .iter()
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    names.sort();
    (vars, names)
}

/// Tasks (processes and threads) of the real user of this process, as `RLIMIT_NPROC` counts them.
fn user_tasks() -> u64 {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next())
                == Some(uid.as_str())
        })
        .map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(1)
        })
        .sum()
}

/// What the child prepared before the fork needs between fork and exec.
struct Walls {
    /// The process that forks (it watches the command, see [`watch`]).
    parent: libc::pid_t,
    procs: Option<RawFd>,
    limits: Vec<(Resource, u64)>,
    isolation: Option<Isolation>,
    last_cap: u32,
    ruleset: Option<RulesetCreated>,
    filters: Vec<BpfProgram>,
}

/// What the child does between fork and exec. Only system calls: no allocation, no locks.
///
/// The child forked by `std::process::Command` stays outside the sandbox as the command's watchdog: it
/// forks again, and the grandchild builds the walls and runs the program. The watchdog is told by the
/// kernel when the thread that started it dies (`PR_SET_PDEATHSIG`, which only reaches a direct child),
/// and kills the command's whole process group then, so that no descendant outlives a FailCore process
/// that was killed; otherwise it passes the command's exit status on as its own.
fn enter_sandbox(walls: &mut Walls) -> io::Result<()> {
    // SAFETY: prctl and getppid take no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::getppid() } != walls.parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    if let Some(fd) = walls.procs {
        // "0" moves the writing process, this child, into the command's cgroup before it runs anything.
        // SAFETY: writes one byte from a static buffer to an open descriptor.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    for &(resource, value) in &walls.limits {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: a valid pointer to a local.
        if unsafe { libc::setrlimit(resource, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // The watchdog waits for these two signals; they stay blocked until it does.
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset.
    let mut watched: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut before: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to locals.
    unsafe {
        libc::sigemptyset(&mut watched);
        libc::sigaddset(&mut watched, libc::SIGTERM);
        libc::sigaddset(&mut watched, libc::SIGCHLD);
        if libc::sigprocmask(libc::SIG_BLOCK, &watched, &mut before) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: getpid cannot fail.
    let watchdog = unsafe { libc::getpid() };
    // SAFETY: the forked process makes only system calls until it execs or exits.
    let command = unsafe { libc::fork() };
    if command < 0 {
        return Err(io::Error::last_os_error());
    }
    if command > 0 {
        watch(command, &watched);
    }
    // The command: killed if its watchdog dies.
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::getppid() } != watchdog {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: restores the mask saved above.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, &before, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if let Some(isolation) = &walls.isolation {
        isolation.enter()?;
    }
    drop_capabilities(walls.last_cap)?;
    if let Some(ruleset) = walls.ruleset.take() {
        match ruleset.restrict_self() {
            Ok(status) if status.ruleset == RulesetStatus::FullyEnforced => {}
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP)),
            Err(_) => return Err(io::Error::last_os_error()),
        }
    }
    for program in &walls.filters {
        if seccompiler::apply_filter(program).is_err() {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The watchdog: waits for the command to end and exits as it did, or, told that the process that
/// started it is gone (SIGTERM, its parent-death signal), kills the command's process group. Never
/// returns. Only system calls.
fn watch(command: libc::pid_t, watched: &libc::sigset_t) -> ! {
    // Not dumpable: its memory, and the environment in it (this process's, copied by the fork), cannot be
    // read through /proc by the command, whatever user it runs as.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // Holds no descriptor of the command's: its pipes reach end of file when the command and what it
    // started are done, and `std::process::Command` learns that the program was exec'd when the
    // grandchild's copy of its close-on-exec pipe closes.
    // SAFETY: closes descriptors of this process only; close_range may be missing (Linux < 5.9).
    if unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) } != 0 {
        for fd in 0..1024 {
            // SAFETY: as above.
            unsafe { libc::close(fd) };
        }
    }
    loop {
        // SAFETY: a valid signal set; no info is asked for.
        let signal = unsafe { libc::sigwaitinfo(watched, std::ptr::null_mut()) };
        if signal == libc::SIGTERM {
            // SAFETY: kill has no memory effects; the group is the command's, this process included.
            unsafe {
                libc::kill(-libc::getpgrp(), libc::SIGKILL);
                libc::_exit(128 + libc::SIGKILL);
            }
        }
        let mut status = 0;
        // SAFETY: a valid pointer to a local.
        if unsafe { libc::waitpid(command, &mut status, libc::WNOHANG) } != command {
            continue;
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: ends this process by the signal that ended the command, so that its status is the
            // command's; no core file is written for it. sigset_t is plain data.
            unsafe {
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                libc::signal(signal, libc::SIG_DFL);
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
                libc::kill(libc::getpid(), signal);
                libc::_exit(128 + signal);
            }
        }
        // SAFETY: ends this process with the command's exit status.
        unsafe { libc::_exit(libc::WEXITSTATUS(status)) };
    }
}

/// Reads a stream to its end, keeping the first `max` bytes.
fn capture(mut stream: impl Read, max: usize) -> Captured {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                total += n as u64;
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Captured {
        truncated: total > kept.len() as u64,
        text: String::from_utf8_lossy(&kept).into_owned(),
        bytes: total,
    }
}

/// Kills the command's process group and every member of its cgroup.
fn kill_all(pgid: i32, cgroup: Option<&CommandCgroup>) {
    // SAFETY: kill has no memory effects. The group leader is not reaped yet, so its id cannot have been
    // reused.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if let Some(cgroup) = cgroup {
        for pid in cgroup.members() {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Waits, without reaping, until `pid` exits.
fn wait_exit(pid: i32) {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointer; WNOWAIT leaves the child to be reaped by `Child::wait`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn display(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

pub(crate) fn spawn(command: Command, spec: &SandboxSpec, plan: Plan) -> Result<ExecOutput, Error> {
    let program = command.program.clone();
    let fail = |rule: &str, reason: String| Error::Exec {
        program: program.clone(),
        rule: rule.into(),
        reason,
    };
    let mut ruleset = ruleset(spec, &plan).map_err(|e| {
        fail(
            "exec.sandbox.landlock",
            format!("the Landlock ruleset cannot be built: {e}"),
        )
    })?;
    let filters = filters(spec, &plan).map_err(|e| {
        fail(
            "exec.sandbox.seccomp",
            format!("the seccomp filter cannot be built: {e}"),
        )
    })?;
    let (env, env_names) = environment(spec, &command.env);
    let cgroup = match &plan.processes {
        ProcessLimit::Cgroup(base) => {
            // The command's watchdog is one more process of the cgroup.
            Some(
                CommandCgroup::create(base, spec.processes + 1).map_err(|e| {
                    fail(
                        "exec.sandbox.cgroup",
                        format!(
                            "cannot create a pids cgroup beneath {}: {e}",
                            base.display()
                        ),
                    )
                })?,
            )
        }
        _ => None,
    };
    let mut limits: Vec<(Resource, u64)> = vec![
        (libc::RLIMIT_CPU, spec.cpu_seconds),
        (libc::RLIMIT_AS, spec.address_space),
        (libc::RLIMIT_FSIZE, spec.file_size),
    ];
    if plan.processes == ProcessLimit::Rlimit {
        // The kernel counts every task of the user, and refuses even the exec past the limit: the
        // command's allowance comes on top of what the user runs now.
        // The command's watchdog is one more task.
        limits.push((libc::RLIMIT_NPROC, user_tasks() + spec.processes + 1));
    }
    let isolation = if plan.mount_namespace {
        let writable: Vec<PathBuf> = spec.writable_roots().cloned().collect();
        Some(
            Isolation::new(&writable, spec.root().map(PathBuf::as_path)).map_err(|e| {
                fail(
                    "exec.sandbox.mount_namespace",
                    format!("the command's mount namespace cannot be prepared: {e}"),
                )
            })?,
        )
    } else {
        None
    };
    let mut walls = Walls {
        // SAFETY: getpid cannot fail.
        parent: unsafe { libc::getpid() },
        procs: cgroup.as_ref().map(|c| c.procs.as_raw_fd()),
        limits,
        isolation,
        last_cap: last_capability(),
        ruleset: ruleset.take(),
        filters,
    };

    let mut cmd = std::process::Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .envs(env)
        .process_group(0)
        .stdin(if command.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(root) = spec.root() {
        cmd.current_dir(root);
    }
    // SAFETY: the closure makes only async-signal-safe system calls (see `enter_sandbox`); everything it
    // uses was built before the fork.
    unsafe {
        cmd.pre_exec(move || enter_sandbox(&mut walls));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        fail(
            "exec.spawn",
            format!("the program could not be started in the sandbox: {e}"),
        )
    })?;
    let pid = child.id() as i32;

    if let (Some(mut stdin), Some(bytes)) = (child.stdin.take(), command.stdin) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let max = spec.max_output;
    let readers: Vec<mpsc::Receiver<Captured>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .map(|stream| {
        let (tx, rx) = mpsc::channel();
        if let Some(stream) = stream {
            std::thread::spawn(move || {
                let _ = tx.send(capture(stream, max));
            });
        }
        rx
    })
    .collect();
    let (exited_tx, exited) = mpsc::channel();
    std::thread::spawn(move || {
        wait_exit(pid);
        let _ = exited_tx.send(());
    });

    let timed_out = matches!(
        exited.recv_timeout(spec.timeout()),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    if timed_out {
        kill_all(pid, cgroup.as_ref());
        let _ = exited.recv();
    }
    // The command has exited but is not reaped, so its group id is still its own: end whatever it left
    // running, so that nothing it started outlives it.
    kill_all(pid, cgroup.as_ref());
    let status = child
        .wait()
        .map_err(|e| fail("exec.wait", format!("waiting for the command failed: {e}")))?;
    let elapsed = started.elapsed();
    let deadline = Instant::now() + READ_GRACE;
    let mut streams = readers.into_iter().map(|rx| {
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or(Captured {
                text: String::new(),
                bytes: 0,
                truncated: true,
            })
    });
    let stdout = streams.next().unwrap_or_else(empty);
    let stderr = streams.next().unwrap_or_else(empty);
    drop(cgroup);

    let writable: Vec<String> = if plan.filesystem {
        spec.writable_roots()
            .map(|p| display(p))
            .chain(["/dev/null".to_owned()])
            .collect()
    } else {
        vec!["/".into()]
    };
    let read = match (plan.filesystem, spec.readable()) {
        (true, Some(paths)) => paths
            .iter()
            .chain(spec.writable_roots())
            .map(|p| display(p))
            .collect(),
        _ => vec!["/".into()],
    };
    let network = match spec.network() {
        Network::None => "none".to_owned(),
        Network::All => "all".to_owned(),
        Network::ConnectPorts(ports) => format!(
            "tcp:{}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let mut network_enforced_by = Vec::new();
    if plan.landlock_net {
        network_enforced_by.push("landlock".to_owned());
    }
    if plan.seccomp_net {
        network_enforced_by.push("seccomp".to_owned());
    }
    Ok(ExecOutput {
        program: command.program,
        args: command.args,
        exit: Exit {
            code: status.code(),
            signal: status.signal(),
            timed_out,
        },
        stdout,
        stderr,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        sandbox: SandboxApplied {
            landlock_abi: plan.landlock_abi,
            read,
            write: writable,
            network,
            network_enforced_by,
            cpu_seconds: spec.cpu_seconds,
            address_space_bytes: spec.address_space,
            file_size_bytes: spec.file_size,
            processes: spec.processes,
            processes_enforced_by: match plan.processes {
                ProcessLimit::Cgroup(_) => "cgroup".into(),
                ProcessLimit::Rlimit => "rlimit".into(),
                ProcessLimit::None => String::new(),
            },
            timeout_ms: u64::try_from(spec.timeout().as_millis()).unwrap_or(u64::MAX),
            env: env_names,
            missing: plan.missing,
        },
    })
}

fn empty() -> Captured {
    Captured {
        text: String::new(),
        bytes: 0,
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cgroups of a process that is gone are removed; a live process's, and anything not named by
    /// FailCore, are left alone. (Plain directories stand in for cgroups: removing an empty one is the same
    /// call.)
    #[test]
    fn the_cgroups_of_processes_that_are_gone_are_swept() {
        let base = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let live = std::process::id();
        for name in [
            format!("failcore-{dead}-0"),
            format!("failcore-{dead}-7"),
            format!("failcore-{live}-0"),
            "failcore-x-0".to_owned(),
            "other".to_owned(),
        ] {
            std::fs::create_dir(base.path().join(name)).unwrap();
        }
        sweep_stale(base.path());
        let mut left: Vec<String> = std::fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!("failcore-{live}-0"),
                "failcore-x-0".to_owned(),
                "other".to_owned()
            ]
        );
    }

    #[test]
    fn the_user_task_count_includes_this_process_threads() {
        let own: u64 = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        assert!(own >= 1);
        let all = user_tasks();
        assert!(
            all >= own,
            "{all} tasks counted for the user, {own} in this process alone"
        );
    }

    /// A kernel of Landlock ABI 4 (Linux 6.7 to 6.9), emulated by building the sandbox as on one: the scopes
    /// and device ioctl rights it lacks are refused by default, and recorded on a real run that accepts a
    /// weaker sandbox.
    #[test]
    fn an_older_landlock_abi_records_what_it_lacks_on_a_real_run() {
        let real = kernel();
        if real.landlock_abi < 4 {
            return;
        }
        let emulated = Kernel {
            landlock_abi: 4,
            ..real.clone()
        };
        let strict = crate::policy::ExecPolicy::allow(["true"]);
        let refused = super::super::assess_with(strict.sandbox(), &emulated).expect_err("refused");
        assert_eq!(refused.rule, "exec.sandbox.landlock_abi");
        let weaker = strict.accept_weaker(true);
        let plan = super::super::assess_with(weaker.sandbox(), &emulated).expect("accepted");
        let out = spawn(Command::new("true"), weaker.sandbox(), plan).expect("ran");
        assert!(out.success(), "{out:?}");
        assert_eq!(out.sandbox.landlock_abi, 4);
        let missing = out.sandbox.missing.join("\n");
        assert!(
            missing.contains("Landlock ABI 5 (ioctl on devices"),
            "{missing}"
        );
        assert!(missing.contains("Landlock ABI 6 (scopes"), "{missing}");
    }

    #[test]
    fn seccomp_rules_cover_the_x32_numbers() {
        let rules = with_x32(&[(libc::SYS_socket, Vec::new())]);
        assert!(rules.contains_key(&libc::SYS_socket));
        assert_eq!(
            rules.contains_key(&(libc::SYS_socket | 0x4000_0000)),
            cfg!(target_arch = "x86_64")
        );
    }
}
