//! What to delete, decided without I/O: from the oldest candidates of a
//! listing, the filesystem usage and the root's rules, the ordered list of
//! files whose removal brings usage below the low watermark.

use std::path::PathBuf;

/// A file that may be deleted (old enough, matching), as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Candidate {
    /// Modification time, Unix seconds (first: the sort key).
    pub mtime: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// Path relative to the root (tie-breaker, so the order is total).
    pub rel: PathBuf,
    /// Space its removal frees: `st_blocks * 512`, or 0 for a file with
    /// other hard links (removing one name frees nothing).
    pub bytes: u64,
    /// Device, to check at deletion time that it is the same file.
    pub dev: u64,
    /// Inode, likewise.
    pub ino: u64,
}

/// Filesystem usage in the terms of `disk::probe::Usage` (`df`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fill {
    /// Total minus free bytes.
    pub used_bytes: u64,
    /// Bytes available to unprivileged users.
    pub avail_bytes: u64,
    /// `used / (used + avail) * 100`.
    pub used_pct: f32,
}

/// The rules of one root that planning needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Act above this used %.
    pub high_watermark_pct: u8,
    /// Delete until strictly below this used %.
    pub low_watermark_pct: u8,
    /// Never delete the newest this many matching files.
    pub keep_newest: u64,
    /// Most deletions in one pass.
    pub max_deletions: usize,
}

/// The decision for one root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Usage was above the high watermark.
    pub needed: bool,
    /// Bytes to free to get strictly below the low watermark.
    pub bytes_to_free: u64,
    /// How many of the (oldest-first) candidates to delete: a prefix.
    pub delete: usize,
    /// Sum of their `bytes`.
    pub expected_freed: u64,
    /// The expected freed bytes reach `bytes_to_free`.
    pub reaches_target: bool,
    /// Candidates that could not be deleted because they are among the
    /// newest `keep_newest` matching files.
    pub held_by_keep_newest: u64,
    /// The pass stopped at `max_deletions`.
    pub hit_max_deletions: bool,
}

/// Bytes whose removal takes `fill` strictly below `low_pct`, 0 if it
/// already is. Freed bytes move from used to available, so the
/// denominator stays `used + avail`.
pub fn bytes_to_free(fill: Fill, low_pct: u8) -> u64 {
    let denom = u128::from(fill.used_bytes) + u128::from(fill.avail_bytes);
    // used' < low * denom / 100  <=>  used' <= ceil(low * denom / 100) - 1
    let limit = (u128::from(low_pct) * denom).div_ceil(100);
    let used = u128::from(fill.used_bytes);
    if used == 0 || used < limit {
        return 0;
    }
    u64::try_from(used - limit + 1).unwrap_or(u64::MAX)
}

/// Plans deletions. `oldest` is sorted oldest first and holds the oldest
/// old-enough matching files (at least `max_deletions` of them when there
/// are that many); `matching_total` counts every matching file, young ones
/// included (they are all newer than any candidate); `old_enough_total`
/// counts the matching files older than `min_age`.
pub fn plan(
    oldest: &[Candidate],
    matching_total: u64,
    old_enough_total: u64,
    fill: Fill,
    rules: Rules,
) -> Plan {
    let needed = fill.used_pct > f32::from(rules.high_watermark_pct);
    if !needed {
        return Plan::default();
    }
    let need = bytes_to_free(fill, rules.low_watermark_pct);
    // Rank r (0 = oldest) is among the newest N iff r >= total - N.
    let outside_keep = matching_total.saturating_sub(rules.keep_newest);
    let by_keep = usize::try_from(outside_keep).unwrap_or(usize::MAX);
    let allowed = oldest.len().min(by_keep).min(rules.max_deletions);
    let mut p = Plan {
        needed,
        bytes_to_free: need,
        ..Plan::default()
    };
    for c in &oldest[..allowed] {
        if p.expected_freed >= need {
            break;
        }
        p.expected_freed = p.expected_freed.saturating_add(c.bytes);
        p.delete += 1;
    }
    p.reaches_target = p.expected_freed >= need;
    p.held_by_keep_newest = old_enough_total.saturating_sub(outside_keep);
    p.hit_max_deletions = !p.reaches_target && p.delete == rules.max_deletions;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn files(n: usize, bytes: u64) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                mtime: 1_000 + i as i64,
                mtime_nsec: 0,
                rel: PathBuf::from(format!("f{i:03}.mp4")),
                bytes,
                dev: 1,
                ino: i as u64,
            })
            .collect()
    }

    fn fill(used: u64, total: u64) -> Fill {
        Fill {
            used_bytes: used,
            avail_bytes: total - used,
            used_pct: (used as f64 * 100.0 / total as f64) as f32,
        }
    }

    fn rules() -> Rules {
        Rules {
            high_watermark_pct: 80,
            low_watermark_pct: 50,
            keep_newest: 0,
            max_deletions: 1000,
        }
    }

    #[test]
    fn nothing_below_high_watermark() {
        let p = plan(&files(10, MIB), 10, 10, fill(8 * MIB, 10 * MIB), rules());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn oldest_first_until_strictly_below_low() {
        // 9 of 10 MiB used: exactly 50 % is not below 50 %, so 5 MiB go.
        let p = plan(&files(9, MIB), 9, 9, fill(9 * MIB, 10 * MIB), rules());
        assert!(p.needed && p.reaches_target);
        assert_eq!(p.bytes_to_free, 4 * MIB + 1);
        assert_eq!((p.delete, p.expected_freed), (5, 5 * MIB));
    }

    #[test]
    fn keep_newest_and_max_deletions_bound_it() {
        let r = Rules {
            keep_newest: 7,
            ..rules()
        };
        // 9 candidates, 12 matching (3 too young): ranks 0..5 may go.
        let p = plan(&files(9, MIB), 12, 9, fill(9 * MIB, 10 * MIB), r);
        assert_eq!(p.delete, 5);
        let p = plan(&files(9, MIB), 10, 9, fill(9 * MIB, 10 * MIB), r);
        assert_eq!((p.delete, p.reaches_target), (3, false));
        assert_eq!(p.held_by_keep_newest, 6);
        let r = Rules {
            max_deletions: 2,
            ..rules()
        };
        let p = plan(&files(9, MIB), 9, 9, fill(9 * MIB, 10 * MIB), r);
        assert_eq!((p.delete, p.hit_max_deletions), (2, true));
    }

    #[test]
    fn hard_links_free_nothing_so_more_files_go() {
        let mut f = files(9, MIB);
        f[0].bytes = 0;
        let p = plan(&f, 9, 9, fill(9 * MIB, 10 * MIB), rules());
        assert_eq!(p.delete, 6);
    }

    #[test]
    fn target_arithmetic_edges() {
        assert_eq!(bytes_to_free(fill(49, 100), 50), 0);
        assert_eq!(bytes_to_free(fill(50, 100), 50), 1);
        assert_eq!(
            bytes_to_free(fill(u64::MAX / 2, u64::MAX / 2 + 10), 1),
            u64::MAX / 2 - (u64::MAX / 2 + 10).div_ceil(100) + 1
        );
        let empty = Fill {
            used_bytes: 0,
            avail_bytes: 0,
            used_pct: 0.0,
        };
        assert_eq!(bytes_to_free(empty, 50), 0);
    }
}
