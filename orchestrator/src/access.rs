//! Who may do what: the roles of the vault and the permission each action needs. Pure; the accounts store and the
//! web layers ask [`Role::may`] and show [`Denied`]'s sentence when it says no.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Sees everything, changes nothing.
    Reader,
    /// Test failovers only (drills); cannot touch production replication.
    DrillOperator,
    /// Reprotect, failover, commit, cancel, re-protect; job actions.
    Operator,
    /// Everything, plus the infrastructure (fault knobs) and accounts.
    Administrator,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::DrillOperator, Role::Operator, Role::Administrator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::DrillOperator => "drill-operator",
            Role::Operator => "operator",
            Role::Administrator => "administrator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    pub fn title(self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::DrillOperator => "Drill operator",
            Role::Operator => "Operator",
            Role::Administrator => "Administrator",
        }
    }

    /// Whether this role may do `p`; else the sentence to show.
    pub fn may(self, p: Permission) -> Result<(), Denied> {
        let ok = match p {
            Permission::Read => true,
            Permission::TestFailover => self != Role::Reader,
            Permission::Operate => matches!(self, Role::Operator | Role::Administrator),
            Permission::Administer => self == Role::Administrator,
        };
        if ok {
            Ok(())
        } else {
            Err(Denied { role: self, permission: p })
        }
    }
}

/// What an action needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    Read,
    /// A drill: a test failover that leaves production replication alone.
    TestFailover,
    /// Reprotect, failover, commit, cancel failover, change recovery point, re-protect; plan failover; cancel,
    /// restart or resume a job.
    Operate,
    /// Fault knobs of the estate, accounts.
    Administer,
}

/// A refusal by role, with what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Your role, {}, cannot {}. Ask an {} to do it, or to give you that role.", .role.title(), self.what(), self.who())]
pub struct Denied {
    pub role: Role,
    pub permission: Permission,
}

impl Denied {
    fn what(&self) -> &'static str {
        match self.permission {
            Permission::Read => "read the vault",
            Permission::TestFailover => "run test failovers",
            Permission::Operate => "reprotect, fail over, commit or re-protect items, or act on their jobs",
            Permission::Administer => "change the infrastructure or the accounts",
        }
    }
    fn who(&self) -> &'static str {
        match self.permission {
            Permission::Administer => "Administrator",
            _ => "Operator or Administrator",
        }
    }
}

/// A local account's name: 1–64 of letters, digits, `.`, `-`, `_`, `@`.
pub fn parse_user_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 64 {
        return Err("a user name has 1 to 64 characters".into());
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-@".contains(*c))) {
        return Err(format!("a user name may not contain {c:?}; use letters, digits, '.', '-', '_' or '@'"));
    }
    Ok(s.to_owned())
}

/// Where to go after signing in: only a path of this site (no `//host`, no scheme), else the overview.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and line breaks inside URLs and read a backslash as a slash, so "/<TAB>/evil.example"
        // would land on another host: a path with any control character or backslash is refused whole (and a
        // CR/LF could never make a header value either).
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains("://")
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}
