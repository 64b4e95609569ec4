//! Recovery plans as an Operator shapes them: a name and ordered groups of replicated items. A plan is checked whole
//! before it is stored, inside the transaction that stores it, so a plan job never meets a plan that cannot run;
//! one with a job running is left alone until the job ends.

use serde::{Deserialize, Serialize};

use crate::estate::{EstateDoc, RecoveryPlan};
use crate::service::{Service, ServiceError};

/// Azure Site Recovery's limit: a plan has at most seven groups.
pub const MAX_GROUPS: usize = 7;
const MAX_NAME: usize = 100;

/// A plan as entered: its name, its groups of item ids in order, and the protection settings its reprotect gives
/// each item unless given others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub name: String,
    pub groups: Vec<Vec<String>>,
    #[serde(default)]
    pub protection: crate::domain::ProtectionSettings,
}

impl PlanSpec {
    /// The plan in words, for the audit log: "ERP: erp-db → erp-app, erp-web (retention 180 min)".
    pub fn words(&self) -> String {
        let groups: Vec<String> = self.groups.iter().map(|g| g.join(", ")).collect();
        let p = &self.protection;
        let settings: Vec<String> = [
            ("retention", p.retention_min),
            ("app-consistent every", p.app_consistent_every_min),
            ("RPO threshold", p.rpo_threshold_min),
        ]
        .iter()
        .filter_map(|(what, v)| v.map(|m| format!("{what} {m} min")))
        .collect();
        let settings = if settings.is_empty() { String::new() } else { format!(" ({})", settings.join(", ")) };
        format!("{}: {}{settings}", self.name.trim(), groups.join(" → "))
    }
}

/// What is wrong with `spec` in `doc`, each with what to enter instead (none: it may be stored). `id` is the plan
/// being changed, if it exists. Pure.
pub fn problems(spec: &PlanSpec, doc: &EstateDoc, id: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let name = spec.name.trim();
    match name.chars().count() {
        0 => out.push("the plan needs a name".to_owned()),
        n if n > MAX_NAME => out.push(format!("the name has {n} characters; at most {MAX_NAME}")),
        _ => {}
    }
    if doc.plans.iter().any(|p| Some(p.id.as_str()) != id && p.name.trim().eq_ignore_ascii_case(name)) {
        out.push(format!("another plan is named {name}; choose another name"));
    }
    match spec.groups.len() {
        0 => out.push("the plan needs at least one group with an item".to_owned()),
        n if n > MAX_GROUPS => out.push(format!("the plan has {n} groups; at most {MAX_GROUPS}")),
        _ => {}
    }
    for (g, group) in spec.groups.iter().enumerate() {
        if group.is_empty() {
            out.push(format!("group {} is empty: add an item to it or remove it", g + 1));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for id in spec.groups.iter().flatten() {
        if !seen.insert(id.as_str()) {
            out.push(format!("{id} is in the plan twice: keep it in one group"));
        }
        if !doc.items.iter().any(|r| &r.item.id == id) {
            out.push(format!("there is no replicated item {id}"));
        }
    }
    out.extend(spec.protection.problems().into_iter().map(|p| format!("the plan's protection settings: {p}")));
    // A replication group fails over to one shared point (R-RP2): all its members are in the plan (in any groups).
    let mut groups: Vec<&str> = Vec::new();
    for rec in &doc.items {
        if let Some(rg) = rec.item.replication_group.as_deref() {
            if !groups.contains(&rg) {
                groups.push(rg);
            }
        }
    }
    for rg in groups {
        let members: Vec<&str> = doc
            .items
            .iter()
            .filter(|r| r.item.replication_group.as_deref() == Some(rg))
            .map(|r| r.item.id.as_str())
            .collect();
        let placed = members.iter().filter(|m| spec.groups.iter().flatten().any(|i| i == *m)).count();
        if placed > 0 && placed < members.len() {
            out.push(format!(
                "replication group {rg} fails over to one shared point: add all its items ({})",
                members.join(", ")
            ));
        }
    }
    out
}

/// A new plan's id from its name: `plan-` and the name's letters and digits, made unique.
fn new_id(name: &str, doc: &EstateDoc) -> String {
    let mut slug = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_matches('-');
    let base = if slug.is_empty() { "plan".to_owned() } else { format!("plan-{slug}") };
    let mut id = base.clone();
    let mut n = 2;
    while doc.plans.iter().any(|p| p.id == id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

impl Service {
    /// Refuses a change to a plan one of whose jobs has not ended.
    async fn plan_idle(&self, id: &str) -> Result<(), ServiceError> {
        let busy =
            self.jobs.list(500).await?.into_iter().find(|j| j.plan_id.as_deref() == Some(id) && !j.state.is_terminal());
        match busy {
            Some(j) => Err(ServiceError::Invalid(format!(
                "Job {} of the plan has not ended; change the plan once it has (or cancel it from its job page).",
                j.id
            ))),
            None => Ok(()),
        }
    }

    /// Stores a new plan, or replaces plan `id`'s name and groups; refused with every problem at once.
    pub async fn save_plan(&self, id: Option<&str>, spec: PlanSpec) -> Result<RecoveryPlan, ServiceError> {
        if let Some(id) = id {
            self.plan_idle(id).await?;
        }
        let saved = self
            .estate
            .update(|doc| {
                if let Some(id) = id {
                    if !doc.plans.iter().any(|p| p.id == id) {
                        return Ok(Err(ServiceError::NotFound(format!(
                            "There is no recovery plan {id}; GET /api/v1/plans lists them."
                        ))));
                    }
                }
                let problems = problems(&spec, doc, id);
                if !problems.is_empty() {
                    return Ok(Err(ServiceError::Invalid(format!(
                        "The plan cannot be saved: {}.",
                        problems.join("; ")
                    ))));
                }
                let plan = RecoveryPlan {
                    id: id.map_or_else(|| new_id(&spec.name, doc), str::to_owned),
                    name: spec.name.trim().to_owned(),
                    groups: spec.groups.clone(),
                    protection: spec.protection,
                };
                match doc.plans.iter_mut().find(|p| p.id == plan.id) {
                    Some(p) => *p = plan.clone(),
                    None => doc.plans.push(plan.clone()),
                }
                Ok(Ok(plan))
            })
            .await??;
        Ok(saved)
    }

    /// Removes plan `id` (its items and their jobs stay).
    pub async fn remove_plan(&self, id: &str) -> Result<(), ServiceError> {
        self.plan_idle(id).await?;
        let found = self
            .estate
            .update(|doc| {
                let before = doc.plans.len();
                doc.plans.retain(|p| p.id != id);
                Ok(doc.plans.len() < before)
            })
            .await?;
        if found {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!("There is no recovery plan {id}; GET /api/v1/plans lists them.")))
        }
    }
}
