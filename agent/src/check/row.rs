//! One row of the `check --online` table. A leaf: the broker steps and
//! every source's rows (`crate::sources`) build these.

/// A row's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Works.
    Ok,
    /// Broken: the agent will not do its job until fixed.
    Failed,
    /// Works, but worth a look.
    Warning,
}

/// One row of the commissioning table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// What was checked.
    pub check: String,
    /// Verdict.
    pub verdict: Verdict,
    /// What was found, plain words.
    pub result: String,
    /// What to do (empty when nothing).
    pub todo: String,
}

/// A [`Row`], for the row builders' brevity.
pub fn row(
    check: impl Into<String>,
    verdict: Verdict,
    result: impl Into<String>,
    todo: impl Into<String>,
) -> Row {
    Row {
        check: check.into(),
        verdict,
        result: result.into(),
        todo: todo.into(),
    }
}
