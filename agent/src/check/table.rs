//! The commissioning table as plain text.

use std::io::Write;

use super::{Row, Verdict};

/// Prints `rows` as a plain text table.
pub fn print_table(out: &mut impl Write, rows: &[Row]) {
    let verdict = |v: Verdict| match v {
        Verdict::Ok => "ok",
        Verdict::Failed => "FAILED",
        Verdict::Warning => "warning",
    };
    let w0 = rows.iter().map(|r| r.check.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "{:<w0$} | {:<7} | result | what to do", "check", "");
    let _ = writeln!(out, "{}", "-".repeat(w0 + 40));
    for r in rows {
        let todo = if r.todo.is_empty() { "-" } else { &r.todo };
        let _ = writeln!(
            out,
            "{:<w0$} | {:<7} | {} | {}",
            r.check,
            verdict(r.verdict),
            r.result,
            todo
        );
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::row;

    #[test]
    fn table_has_header_and_rows() {
        let mut out = Vec::new();
        print_table(
            &mut out,
            &[
                row("disk /", Verdict::Ok, "ext4", ""),
                row(
                    "SMART",
                    Verdict::Warning,
                    "/dev/sda: 8 reallocated",
                    "watch it",
                ),
            ],
        );
        let t = String::from_utf8(out).expect("utf8");
        assert!(t.starts_with("check"), "{t}");
        assert!(t.contains("disk / | ok      | ext4 | -"), "{t}");
        assert!(
            t.contains("SMART  | warning | /dev/sda: 8 reallocated | watch it"),
            "{t}"
        );
    }
}
