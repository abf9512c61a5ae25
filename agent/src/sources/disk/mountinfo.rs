//! Pure parser for `/proc/self/mountinfo`.
//!
//! Used to tell whether a configured recording path is really a mount point
//! (and of which filesystem type, read-only or not). No I/O here.
//!
//! Two things a sandbox changes are deliberately seen through:
//! - **Read-only** is judged by the *superblock* options only (the field
//!   after the filesystem type). systemd's `ProtectSystem=strict` (and
//!   OpenWrt's ujail) make every mount read-only *per mount* inside the
//!   service's namespace, which says nothing about the disk; the kernel's
//!   `errors=remount-ro` on a failing disk changes the superblock.
//! - **Self bind mounts**: `ReadWritePaths=` (and ujail) bind-mount a path
//!   onto itself, so an empty `/srv/recordings` on the root filesystem gets
//!   a mount table entry of its own. [`bind_of_parent`] recognises it: the
//!   entry shows the same device as the mount holding the parent folder.
//!
//! Format (proc(5)), one mount per line:
//! `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
//! — id, parent, major:minor, root, mount point, mount options, optional
//! fields, `-`, filesystem type, source, super options. Paths escape space,
//! tab, newline and backslash as octal (`\040`, `\011`, `\012`, `\134`).

/// One line of the mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point, unescaped.
    pub mount_point: String,
    /// Filesystem type (`ext4`, `nfs4`, `cifs`, `tmpfs`, `fuse.sshfs`…).
    pub fs_type: String,
    /// The filesystem's superblock is read-only (superblock option `ro`).
    /// Per-mount `ro` is ignored: sandboxes set it on every mount.
    pub read_only: bool,
    /// `major:minor` of the filesystem (same for every mount of it).
    pub dev: String,
    /// Folder of the filesystem mounted here, unescaped: `/` for a normal
    /// mount, the source folder for a bind mount.
    pub root: String,
}

/// Parses the whole table; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let dev = fields.next()?.to_owned();
    let root = unescape(fields.next()?);
    let mount_point = unescape(fields.next()?);
    // Per-mount options: ignored on purpose (see the module docs).
    let _mount_opts = fields.next()?;
    // Optional fields up to the "-" separator.
    for f in fields.by_ref() {
        if f == "-" {
            break;
        }
    }
    let fs_type = unescape(fields.next()?);
    let _source = fields.next()?;
    let super_opts = fields.next().unwrap_or("");
    let has_ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    if !mount_point.starts_with('/') || fs_type.is_empty() {
        return None;
    }
    Some(MountEntry {
        mount_point,
        read_only: has_ro(super_opts),
        fs_type,
        dev,
        root,
    })
}

/// Decodes the kernel's `\ooo` octal escapes; anything else is kept as is.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (u32::from(oct[0] - b'0') << 6)
                    | (u32::from(oct[1] - b'0') << 3)
                    | u32::from(oct[2] - b'0');
                if let Ok(byte) = u8::try_from(v) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The entry mounted at exactly `path`. When several mounts stack on the
/// same point, the last one (the visible one) wins.
pub fn find<'a>(table: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    table.iter().rev().find(|e| e.mount_point == path)
}

/// The visible mount that holds `dir` (an absolute, canonical path): the
/// one with the longest mount point that is `dir` or a parent of it.
pub fn covering<'a>(table: &'a [MountEntry], dir: &str) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    // Later entries stack on earlier ones, so on equal length the last wins.
    for e in table {
        let mp = e.mount_point.as_str();
        let holds = mp == "/"
            || dir == mp
            || (dir.starts_with(mp) && dir.as_bytes().get(mp.len()) == Some(&b'/'));
        if holds && best.is_none_or(|b| mp.len() >= b.mount_point.len()) {
            best = Some(e);
        }
    }
    best
}

/// Whether the mount at `path` (an absolute, canonical path other than
/// `/`) is only a bind mount of the filesystem that already holds its
/// parent folder, as `ReadWritePaths=` or ujail create: anything written
/// there still lands on the parent's filesystem, so for disk monitoring it
/// is *not mounted*. A bind mount of *another* filesystem (a folder of a
/// USB disk bound onto `/srv/recordings`) is a real mount.
pub fn bind_of_parent(table: &[MountEntry], path: &str) -> bool {
    let Some(entry) = find(table, path) else {
        return false;
    };
    if path == "/" {
        return false;
    }
    let parent = match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => return false,
    };
    covering(table, parent).is_some_and(|p| p.dev == entry.dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    // From a Debian NVR with a USB recording disk, an NFS share, a path with
    // a space and an over-mounted /mnt/stack; plus an OpenWrt tmpfs /tmp.
    const SAMPLE: &str = "\
22 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw,errors=remount-ro
25 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 22 0:26 / /tmp rw,nosuid,nodev,noatime - tmpfs tmpfs rw
40 22 8:17 / /srv/recordings rw,noatime shared:30 - ext4 /dev/sdb1 rw
41 22 0:45 / /mnt/nas\\040share rw,relatime shared:31 - nfs4 10.0.0.9:/export/cctv rw,vers=4.2,hard
42 22 8:33 / /mnt/usb ro,relatime shared:32 - vfat /dev/sdc1 rw,fmask=0022
43 22 8:49 / /mnt/failing rw,relatime shared:33 - ext4 /dev/sdd1 ro,errors=remount-ro
44 22 0:50 / /mnt/stack rw,relatime - tmpfs first rw
45 44 0:51 / /mnt/stack rw,relatime - xfs /dev/sde1 rw
46 22 0:52 / /mnt/back\\134slash\\011tab rw - cifs //nas/x rw
garbage line
";

    #[test]
    fn parses_entries() {
        let t = parse(SAMPLE);
        assert_eq!(t.len(), 10);
        assert_eq!(
            find(&t, "/srv/recordings"),
            Some(&MountEntry {
                mount_point: "/srv/recordings".into(),
                fs_type: "ext4".into(),
                read_only: false,
                dev: "8:17".into(),
                root: "/".into(),
            })
        );
        assert_eq!(find(&t, "/tmp").map(|e| e.fs_type.as_str()), Some("tmpfs"));
        assert_eq!(find(&t, "/").map(|e| e.fs_type.as_str()), Some("ext4"));
    }

    #[test]
    fn octal_escapes() {
        let t = parse(SAMPLE);
        assert_eq!(
            find(&t, "/mnt/nas share").map(|e| e.fs_type.as_str()),
            Some("nfs4")
        );
        assert!(find(&t, "/mnt/back\\slash\ttab").is_some());
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("\\012"), "\n");
        // Not an escape: kept verbatim.
        assert_eq!(unescape("a\\09b"), "a\\09b");
        assert_eq!(unescape("end\\"), "end\\");
        assert_eq!(unescape("end\\04"), "end\\04");
    }

    #[test]
    fn read_only_from_superblock_only() {
        let t = parse(SAMPLE);
        // Per-mount `ro` alone (a sandbox's view) is not a read-only disk.
        assert!(find(&t, "/mnt/usb").is_some_and(|e| !e.read_only));
        // ext4 remounted ro by the kernel after errors shows in super opts.
        assert!(find(&t, "/mnt/failing").is_some_and(|e| e.read_only));
        assert!(find(&t, "/srv/recordings").is_some_and(|e| !e.read_only));
    }

    // /proc/self/mountinfo inside a unit with ProtectSystem=strict,
    // ReadWritePaths=-/srv/recordings -/srv/nvr (systemd 252, Debian 12):
    // every mount is `ro` per mount; /srv/recordings is an empty folder on
    // the root filesystem bound onto itself, /srv/nvr is a real disk bound
    // onto itself, /srv/usb-cctv a folder of a USB disk bound elsewhere,
    // /mnt/failing a disk the kernel remounted read-only after errors.
    const SANDBOXED: &str = "\
812 779 8:2 / / ro,relatime master:1 - ext4 /dev/sda2 rw,errors=remount-ro
813 812 0:22 / /proc rw,nosuid,nodev,noexec,relatime master:12 - proc proc rw
820 812 0:26 /systemd-private-abc-sitewatch-agent.service-x/tmp /tmp rw,nosuid,nodev - tmpfs tmpfs rw
830 812 8:17 / /srv/nvr ro,noatime master:30 - ext4 /dev/sdb1 rw
831 812 8:33 / /mnt/usb ro,relatime master:31 - vfat /dev/sdc1 rw,fmask=0022
832 812 8:49 / /mnt/failing ro,relatime master:33 - ext4 /dev/sdd1 ro,errors=remount-ro
850 812 8:2 /srv/recordings /srv/recordings rw,relatime master:1 - ext4 /dev/sda2 rw,errors=remount-ro
851 830 8:17 / /srv/nvr rw,noatime master:30 - ext4 /dev/sdb1 rw
852 812 8:33 /cctv /srv/usb-cctv ro,relatime master:31 - vfat /dev/sdc1 rw,fmask=0022
853 851 8:17 /cam1 /srv/nvr/cam1 rw,noatime master:30 - ext4 /dev/sdb1 rw
";

    #[test]
    fn sandbox_read_only_view_is_not_a_read_only_disk() {
        let t = parse(SANDBOXED);
        assert!(find(&t, "/").is_some_and(|e| !e.read_only));
        assert!(find(&t, "/srv/nvr").is_some_and(|e| !e.read_only));
        assert!(find(&t, "/mnt/usb").is_some_and(|e| !e.read_only));
        assert!(find(&t, "/mnt/failing").is_some_and(|e| e.read_only));
    }

    #[test]
    fn self_bind_mount_of_the_parent_filesystem() {
        let t = parse(SANDBOXED);
        // Empty folder on the root fs, bound onto itself: not mounted.
        assert!(find(&t, "/srv/recordings").is_some());
        assert_eq!(
            find(&t, "/srv/recordings").map(|e| e.root.as_str()),
            Some("/srv/recordings")
        );
        assert!(bind_of_parent(&t, "/srv/recordings"));
        // A real disk, bound onto itself: still mounted.
        assert!(!bind_of_parent(&t, "/srv/nvr"));
        // A folder of another disk bound here: a real mount.
        assert!(!bind_of_parent(&t, "/srv/usb-cctv"));
        // A folder of the disk above it, bound onto itself: not a disk.
        assert!(bind_of_parent(&t, "/srv/nvr/cam1"));
        // Normal mounts and the root.
        assert!(!bind_of_parent(&t, "/"));
        assert!(!bind_of_parent(&t, "/mnt/usb"));
        assert!(!bind_of_parent(&t, "/proc"));
        // Not in the table at all.
        assert!(!bind_of_parent(&t, "/srv"));
        let plain = parse(SAMPLE);
        assert!(!bind_of_parent(&plain, "/srv/recordings"));
        assert!(!bind_of_parent(&plain, "/mnt/stack"));
    }

    #[test]
    fn covering_mount() {
        let t = parse(SANDBOXED);
        let dev = |d: &str| covering(&t, d).map(|e| e.mount_point.clone());
        assert_eq!(dev("/srv").as_deref(), Some("/"));
        assert_eq!(dev("/srv/nvr/x/y").as_deref(), Some("/srv/nvr"));
        // Prefix of a name is not a parent: /srv/nvrx is on the root fs.
        assert_eq!(dev("/srv/nvrx").as_deref(), Some("/"));
        // Stacked: the later (visible) entry wins.
        assert_eq!(
            covering(&t, "/srv/nvr").map(|e| e.dev.as_str()),
            Some("8:17")
        );
        assert!(covering(&t, "/srv/nvr").is_some_and(|e| e.mount_point == "/srv/nvr"));
    }

    #[test]
    fn last_stacked_mount_wins() {
        let t = parse(SAMPLE);
        assert_eq!(
            find(&t, "/mnt/stack").map(|e| e.fs_type.as_str()),
            Some("xfs")
        );
    }

    #[test]
    fn not_a_mount_point() {
        let t = parse(SAMPLE);
        assert!(find(&t, "/srv").is_none());
        assert!(find(&t, "/srv/recordings/cam1").is_none());
    }

    #[test]
    fn live_table_has_root() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(find(&parse(&text), "/").is_some());
    }
}
