//! Pure parser for `/proc/self/mountinfo`.
//!
//! Used to tell whether a configured recording path is really a mount point
//! (and of which filesystem type, read-only or not). No I/O here.
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
    /// Mounted read-only (per-mount or superblock option `ro`).
    pub read_only: bool,
}

/// Parses the whole table; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let _dev = fields.next()?;
    let _root = fields.next()?;
    let mount_point = unescape(fields.next()?);
    let mount_opts = fields.next()?;
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
        read_only: has_ro(mount_opts) || has_ro(super_opts),
        fs_type,
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
                read_only: false
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
    fn read_only_from_mount_or_super_options() {
        let t = parse(SAMPLE);
        assert!(find(&t, "/mnt/usb").is_some_and(|e| e.read_only));
        // ext4 remounted ro by the kernel after errors shows in super opts.
        assert!(find(&t, "/mnt/failing").is_some_and(|e| e.read_only));
        assert!(find(&t, "/srv/recordings").is_some_and(|e| !e.read_only));
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
