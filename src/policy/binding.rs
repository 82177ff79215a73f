//! How a route binds a policy: the directions it judges, what a violation does, and what
//! happens when the policy cannot be judged. Shared by the config that states it, the policies
//! that default it, and the decisions that apply it.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Block,
    Annotate,
    Shadow,
    /// Replace personal and secret data in the request with placeholders (`[redact]` in the
    /// policy's front matter); never judged by a classifier.
    Redact,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Annotate => "annotate",
            Action::Shadow => "shadow",
            Action::Redact => "redact",
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Input,
    Output,
}
