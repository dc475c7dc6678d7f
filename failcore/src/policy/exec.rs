//! The `exec` preset: an allow-list of programs, run with an argument vector, never a shell string.

use super::{CallView, Policy, PolicyError, Verdict};
use serde_json::Value;

const SHELL_CHARS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '[', ']', '*', '?', '!', '~', '\'', '"',
    '\\', '#', '=', '%', '^', ',',
];

const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "zsh",
    "dash",
    "ksh",
    "csh",
    "tcsh",
    "fish",
    "ash",
    "busybox",
    "cmd",
    "cmd.exe",
    "powershell",
    "powershell.exe",
    "pwsh",
    "env",
    "xargs",
    "eval",
];

/// The program argument must name an allowed binary, and arguments must come as a list of strings (argv).
///
/// A program string with spaces or shell metacharacters (`ls; rm -rf /`, `` `id` ``, `$(id)`) is a command
/// line that needs a shell to split: refused (rule `exec.shell_string`), whatever the allow-list says. Shells
/// and launchers (`sh`, `bash`, `env`, `xargs`, `cmd`, `powershell`, ...) are refused unless listed
/// explicitly, and even then never with `-c` (rule `exec.shell`).
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    name: String,
    allow: Vec<String>,
    program_arg: String,
    argv_arg: Option<String>,
    deny_args: Vec<String>,
}

impl ExecPolicy {
    /// Allows the listed programs: a bare name (`git`) matches that bare name only; an absolute path
    /// (`/usr/bin/git`) matches exactly that path.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(programs: I) -> Self {
        ExecPolicy {
            name: "exec".into(),
            allow: programs.into_iter().map(Into::into).collect(),
            program_arg: "program".into(),
            argv_arg: Some("args".into()),
            deny_args: Vec::new(),
        }
    }

    /// The name recorded with decisions (default `exec`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The argument holding the program (default `program`).
    pub fn program_arg(mut self, name: impl Into<String>) -> Self {
        self.program_arg = name.into();
        self
    }

    /// The argument holding the argument vector (default `args`; `None`: the tool takes none).
    pub fn argv_arg(mut self, name: Option<String>) -> Self {
        self.argv_arg = name;
        self
    }

    /// Refuses arguments equal to, or starting with, any of these patterns (rule `exec.arg_denied`): options
    /// that make an allowed program run something else, such as git's `--upload-pack` or `-c`.
    pub fn deny_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.deny_args.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Checks a program and its argument vector.
    pub fn check_command(&self, program: &str, argv: &[&str]) -> Result<(), Verdict> {
        if program.is_empty() {
            return Err(Verdict::deny("exec.empty", "the program is empty"));
        }
        if program.chars().any(|c| c.is_control()) {
            return Err(Verdict::deny(
                "exec.control_char",
                format!("program {program:?} contains a control character"),
            ));
        }
        if program
            .chars()
            .any(|c| c.is_whitespace() || SHELL_CHARS.contains(&c))
        {
            return Err(Verdict::deny(
                "exec.shell_string",
                format!(
                    "program {program:?} is a command line that needs a shell; pass the program name \
                     and its arguments as a list instead"
                ),
            ));
        }
        if !self.allow.iter().any(|a| a == program) {
            return Err(Verdict::deny(
                "exec.not_allowed",
                format!(
                    "program {program:?} is not on the allow-list ({})",
                    self.allow.join(", ")
                ),
            ));
        }
        let base = program.rsplit(['/', '\\']).next().unwrap_or(program);
        let is_shell = SHELLS.contains(&base.to_ascii_lowercase().as_str());
        for arg in argv {
            if arg.contains('\0') {
                return Err(Verdict::deny(
                    "exec.control_char",
                    format!("argument {arg:?} contains a NUL byte"),
                ));
            }
            if let Some(p) = self
                .deny_args
                .iter()
                .find(|p| !p.is_empty() && arg.starts_with(p.as_str()))
            {
                return Err(Verdict::deny(
                    "exec.arg_denied",
                    format!("argument {arg:?} matches the denied pattern {p:?}"),
                ));
            }
            if is_shell
                && matches!(
                    arg.to_ascii_lowercase().as_str(),
                    "-c" | "/c" | "/k" | "-command" | "-encodedcommand" | "-e"
                )
            {
                return Err(Verdict::deny(
                    "exec.shell",
                    format!("`{program} {arg}` runs a shell command string"),
                ));
            }
        }
        Ok(())
    }
}

impl Policy for ExecPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let program = match call.arg(&self.program_arg) {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(_)) => {
                return Ok(Verdict::deny(
                    "exec.program_not_string",
                    format!(
                        "argument `{}` must be the program name alone",
                        self.program_arg
                    ),
                ))
            }
            _ => {
                return Ok(Verdict::deny(
                    "exec.no_program",
                    format!(
                        "tool `{}` has no string argument `{}` naming the program",
                        call.tool().name(),
                        self.program_arg
                    ),
                ))
            }
        };
        let mut argv: Vec<&str> = Vec::new();
        if let Some(name) = &self.argv_arg {
            match call.arg(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        match item {
                            Value::String(s) => argv.push(s),
                            _ => {
                                return Ok(Verdict::deny(
                                    "exec.argv_not_list",
                                    format!("argument `{name}` must be a list of strings"),
                                ))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Ok(Verdict::deny(
                        "exec.argv_not_list",
                        format!(
                            "argument `{name}` must be a list of strings (argv); a single string would need a shell to split"
                        ),
                    ))
                }
            }
        }
        Ok(match self.check_command(program, &argv) {
            Ok(()) => Verdict::Allow,
            Err(v) => v,
        })
    }
}
