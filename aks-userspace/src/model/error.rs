//! The one error type of the description and the planner: a user mistake, reported as a
//! single message that names the field, the numbers, and a fix. `aksnet` exits with 2.

/// A description that cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Not YAML, or not the shape of a cluster description (unknown or missing field,
    /// wrong type). `message` already carries serde's field path and the location.
    #[error("{message}")]
    Syntax {
        message: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    /// Well-formed, but breaks an AKS rule.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl PlanError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        PlanError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field the error is about, when it is a rule violation.
    pub fn field(&self) -> Option<&str> {
        match self {
            PlanError::Invalid { field, .. } => Some(field),
            PlanError::Syntax { .. } => None,
        }
    }
}

impl From<serde_norway::Error> for PlanError {
    fn from(err: serde_norway::Error) -> Self {
        let location = err.location();
        PlanError::Syntax {
            message: err.to_string(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    }
}
