//! The outcome of a lifecycle event, in the shape CodeDeploy reports it.

use serde::Serialize;
use std::fmt;

/// CodeDeploy's diagnostic error codes (the wire values are fixed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ErrorCode {
    /// The event succeeded.
    Success = 0,
    /// A script named in the AppSpec does not exist in the revision.
    ScriptMissing = 1,
    /// A script exists but could not be made executable or executed.
    ScriptNotExecutable = 2,
    /// A script ran past its timeout and was killed.
    ScriptTimedOut = 3,
    /// A script exited with a non-zero status or was killed by a signal.
    ScriptFailed = 4,
    /// Anything else: bad bundle, bad AppSpec, install conflict, I/O error.
    UnknownError = 5,
}

impl ErrorCode {
    /// The name CodeDeploy uses for this code.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Success => "Success",
            ErrorCode::ScriptMissing => "ScriptMissing",
            ErrorCode::ScriptNotExecutable => "ScriptNotExecutable",
            ErrorCode::ScriptTimedOut => "ScriptTimedOut",
            ErrorCode::ScriptFailed => "ScriptFailed",
            ErrorCode::UnknownError => "UnknownError",
        }
    }
}

/// What the agent reports for one lifecycle event:
/// `{"error_code", "script_name", "message", "log"}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The outcome class; serialized as its number.
    #[serde(serialize_with = "code_as_number")]
    pub error_code: ErrorCode,
    /// The script that failed, as written in the AppSpec; empty otherwise.
    pub script_name: String,
    /// One line saying what happened.
    pub message: String,
    /// The tail (at most 4 KiB) of the script's output.
    pub log: String,
}

fn code_as_number<S: serde::Serializer>(code: &ErrorCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(*code as u8)
}

impl Diagnostic {
    /// A successful event.
    pub fn success(message: impl Into<String>) -> Self {
        Diagnostic {
            error_code: ErrorCode::Success,
            script_name: String::new(),
            message: message.into(),
            log: String::new(),
        }
    }

    /// A failure that is not a script's: `UnknownError` with `message`.
    pub fn unknown(message: impl Into<String>) -> Self {
        Diagnostic {
            error_code: ErrorCode::UnknownError,
            script_name: String::new(),
            message: message.into(),
            log: String::new(),
        }
    }

    /// True for `ErrorCode::Success`.
    pub fn is_success(&self) -> bool {
        self.error_code == ErrorCode::Success
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_code.name(), self.message)
    }
}
