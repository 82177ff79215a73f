//! Policy evaluation: labelled cases (`cases`), running them through a classifier cascade
//! (`runner`), the numbers (`metrics`), reports (`report`, `html`) and external labelled data
//! sets (`dataset`), thresholds chosen on held-out splits (`calibrate`). Used by `guardgate policy
//! test`, `policy calibrate` and `guardgate eval`.

pub mod calibrate;
pub mod cases;
pub mod cli;
pub mod dataset;
pub mod gate;
pub mod html;
pub mod metrics;
pub mod report;
pub mod runner;

pub use cases::{load_cases, Case};
pub use metrics::{Confusion, Metrics};
pub use report::{PolicyReport, Report};
pub use runner::{run_policy, CaseResult, Outcome, RunOptions};
