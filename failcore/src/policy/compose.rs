//! Composition: `all`, `any`, `not`.

use super::{CallView, Policy, PolicyError, PolicyRef, Verdict};

/// Every policy must allow; the first denial wins. An ask is passed on once the others allow.
#[derive(Clone)]
pub struct All {
    name: String,
    parts: Vec<PolicyRef>,
}

/// At least one policy must allow. With none allowing, an ask is passed on, else the first denial.
/// An empty `Any` denies.
#[derive(Clone)]
pub struct Any {
    name: String,
    parts: Vec<PolicyRef>,
}

/// Allows what the inner policy denies and denies what it allows (rule `not`). An ask stays an ask; an
/// error stays an error (a denial).
#[derive(Clone)]
pub struct Not {
    name: String,
    inner: PolicyRef,
}

impl All {
    pub fn new(name: impl Into<String>, parts: Vec<PolicyRef>) -> Self {
        All {
            name: name.into(),
            parts,
        }
    }
}

impl Any {
    pub fn new(name: impl Into<String>, parts: Vec<PolicyRef>) -> Self {
        Any {
            name: name.into(),
            parts,
        }
    }
}

impl Not {
    pub fn new(name: impl Into<String>, inner: PolicyRef) -> Self {
        Not {
            name: name.into(),
            inner,
        }
    }
}

fn prefixed(part: &PolicyRef, verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Deny { rule, reason } => Verdict::Deny {
            rule,
            reason: format!("{} (policy `{}`)", reason, part.name()),
        },
        other => other,
    }
}

impl Policy for All {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let mut ask = None;
        for part in &self.parts {
            match part.check(call)? {
                Verdict::Allow => {}
                Verdict::Ask { reason } => {
                    ask.get_or_insert(reason);
                }
                deny => return Ok(prefixed(part, deny)),
            }
        }
        Ok(match ask {
            Some(reason) => Verdict::Ask { reason },
            None => Verdict::Allow,
        })
    }
}

impl Policy for Any {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let mut ask = None;
        let mut first_deny = None;
        for part in &self.parts {
            match part.check(call)? {
                Verdict::Allow => return Ok(Verdict::Allow),
                Verdict::Ask { reason } => {
                    ask.get_or_insert(reason);
                }
                deny => {
                    first_deny.get_or_insert_with(|| prefixed(part, deny));
                }
            }
        }
        Ok(match (ask, first_deny) {
            (Some(reason), _) => Verdict::Ask { reason },
            (None, Some(deny)) => deny,
            (None, None) => Verdict::deny("any.empty", "no policy in this `any` allows the call"),
        })
    }
}

impl Policy for Not {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        Ok(match self.inner.check(call)? {
            Verdict::Allow => Verdict::deny(
                "not",
                format!(
                    "`{}` refuses what `{}` allows, and `{}` allows this call",
                    self.name,
                    self.inner.name(),
                    self.inner.name()
                ),
            ),
            Verdict::Deny { .. } => Verdict::Allow,
            ask => ask,
        })
    }
}
