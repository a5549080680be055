//! The outcome list the operator inspection tools (`verify-dpop`,
//! `verify-receipt`) print: every check runs, each with its evidence.
use serde::Serialize;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed; `None` when it could not be checked (missing input).
    pub ok: Option<bool>,
    /// Evidence.
    pub detail: String,
}

impl Check {
    /// A check that ran.
    pub fn ran(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: Some(ok),
            detail: detail.into(),
        }
    }

    /// A check that could not run for lack of input.
    pub fn skipped(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            ok: None,
            detail: detail.into(),
        }
    }
}

/// The names of the failed checks, in order.
pub fn failed(checks: &[Check]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|c| c.ok == Some(false))
        .map(|c| c.name)
        .collect()
}
