//! Every rule a refusal names, with its text: the article's (R-…, from the requirements its IDs come from) and
//! Homeward's own. The portal's rules page shows them; a refusal links its rule ID there.

/// (section, rule ID, what the rule says).
pub const CATALOGUE: &[(&str, &str, &str)] = &[
    ("The lifecycle (W = workflow)", "R-W1", "Reprotect (recovery → primary). The operator picks a master target (Windows master target for Windows VMs, Linux master target for Linux VMs), a process server (on the recovery side) and a datastore. Reprotect powers off the on-premises VM if it exists and synchronises the cloud VM's disks to on-premises disks, then keeps replicating changes and producing recovery points."),
    ("The lifecycle (W = workflow)", "R-W2", "Failover (recovery → primary). Only when the item is protected in the recovery→primary direction and its health is OK. From the replicated items page: select the VM, choose Unplanned failover, and in Confirm failover see the direction (\"from Azure\") and choose the recovery point. During failover the cloud VM is shut down; the on-premises VM is brought up from the chosen recovery point."),
    ("The lifecycle (W = workflow)", "R-W3", "Commit. After failback has completed, commit removes the failed-over VM in the cloud (a job). Until commit, the cloud copy exists."),
    ("The lifecycle (W = workflow)", "R-W4", "Re-protect (primary → recovery). After commit the VM is back on-premises but unprotected. The operator selects the failed-back VMs, gives the process server to send data back to the cloud, and confirms; a reprotect job starts; when it finishes the VM replicates to the cloud again and can be failed over again."),
    ("The lifecycle (W = workflow)", "R-W5", "Each of these actions runs as a job with visible steps (tasks), a state, errors with a recommended action, and a stable link."),
    ("Original or alternate location (L)", "R-L1", "Original location recovery: if the original on-premises VM still exists, failback goes to it and only the changes are replicated back."),
    ("Original or alternate location (L)", "R-L2", "Alternate location recovery: if the on-premises VM does not exist at reprotect time, reprotect re-creates it and does a full data download; this takes longer than original location recovery and the product says so before it starts."),
    ("Original or alternate location (L)", "R-L3", "Failback only to the original vCenter and the original configuration server. A new configuration server, or a new vCenter added to the existing configuration server, cannot be a failback target."),
    ("Original or alternate location (L)", "R-L4", "Original location, VM managed by vCenter: the master target's ESXi host must have access to the VM's datastore."),
    ("Original or alternate location (L)", "R-L5", "Original location, VM on an ESXi host not managed by vCenter: the VM's disks must be on a datastore that the master target's host can access."),
    ("Original or alternate location (L)", "R-L6", "VM on an ESXi host without vCenter (and every physical server): discovery of the master target's ESXi host must be complete before reprotect."),
    ("Original or alternate location (L)", "R-L7", "Original location may fail back to vSAN or RDM disks only if those disks already exist and are attached to the on-premises VM."),
    ("Original or alternate location (L)", "R-L8", "Alternate location: the VM is recovered to the ESXi host on which the master target is deployed; its disks go to the datastore chosen at reprotect."),
    ("Original or alternate location (L)", "R-L9", "Alternate location: only VMFS datastores; new VMDKs are created there. vSAN or RDM targets make reprotect and failback refuse."),
    ("Original or alternate location (L)", "R-L10", "Alternate location reprotect = one large initial transfer, then changes."),
    ("Physical servers (P)", "R-P1", "A physical server failed over to the cloud can fail back only as a VMware VM (\"P2A2V\"), through the alternate location flow."),
    ("Physical servers (P)", "R-P2", "A Windows Server 2008 R2 SP1 physical server that was failed over cannot be failed back."),
    ("Physical servers (P)", "R-P3", "At least one master target server and the needed ESXi hosts must be discovered before failback."),
    ("Blocks (B)", "R-B1", "No failback after the migration was completed, after the cloud VM was moved to another resource group, or after the cloud VM was deleted."),
    ("Blocks (B)", "R-B2", "A failed-over VMware VM cannot fail back to a Hyper-V host."),
    ("Preconditions (C)", "R-C1", "A configuration server is required on-premises; the VM must exist in the configuration server's database or failback fails. The configuration server has scheduled backups; after a disaster it is restored with the same IP address."),
    ("Preconditions (C)", "R-C2", "The master target server must have no snapshots when failback is triggered."),
    ("Preconditions (C)", "R-C3", "Failback needs reprotect to be complete: the VM is protected and its health is OK."),
    ("Preconditions (C)", "R-C4", "vCenter must be connected before failback; otherwise detaching and re-attaching disks fails."),
    ("Recovery points (RP)", "R-RP1", "Latest processed: every VM fails over to its own latest available point, also inside a replication group."),
    ("Recovery points (RP)", "R-RP2", "Application-consistent: a single VM fails over to its latest app-consistent point; in a recovery plan with a replication group, each group recovers to its common app-consistent point."),
    ("Recovery points (RP)", "R-RP3", "A VM cannot fail back before it has at least one recovery point; a recovery plan cannot fail back until all its VMs have at least one."),
    ("Recovery points (RP)", "R-RP4", "The latest point is crash-consistent. App-consistent points can be behind in time and lose data; the confirmation says so (with how much time is lost)."),
    ("Guest tools (T) and agent (A)", "R-T1", "During failover to the cloud, VMware Tools are disabled (Windows) or uninstalled (Linux); during failback they are re-enabled (Windows) or reinstalled (Linux)."),
    ("Guest tools (T) and agent (A)", "R-A1", "After an on-premises VM boots, its agent takes time (up to 15 minutes) to register with the configuration server. Re-protect during that window fails with an \"agent not installed\" error; the user retries after a few minutes (the product should say when)."),
    ("Common issue (I)", "R-I1", "Before failback, vCenter must be connected; otherwise disconnecting disks and attaching them back to the VM fails (see R-C4)."),
    ("Homeward's own rules", "DR-1", "A test failover puts its VM on a network an Administrator marked isolated; a production network is refused, since the copy would answer with the real machine's name and addresses."),
    ("Homeward's own rules", "DR-3", "An item has at most one test failover at a time; cleanup needs one to exist."),
    ("Homeward's own rules", "DR-4", "A drill's notes are kept in its report, at most 4000 characters."),
    ("Homeward's own rules", "PS-1", "Protection settings hold: retention 1 to 43200 minutes, an app-consistent point every 1 to 720 minutes, an RPO threshold of 1 to 1440 minutes, and points kept at least as long as the app-consistent frequency."),
    ("Homeward's own rules", "SB-1", "Split-brain (both copies ran and changed after a failover) ends only by choosing the copy to keep; nothing else runs on the item meanwhile."),
    ("Homeward's own rules", "SB-2", "Choosing the copy that wins a split-brain needs a typed reason; it is kept with the losing copy's blocks."),
    ("Homeward's own rules", "SB-3", "Blocks kept from a split-brain can be chosen as a failover's point (laid over the newest processed point) until the next commit removes them; one item at a time, not a recovery plan."),
    ("Homeward's own rules", "VR-1", "The control plane verifies only the replicas it writes itself; a master target's agent checks its own against the cloud copy every cycle."),
];

/// What a rule says, by its ID.
pub fn rule_text(id: &str) -> Option<&'static str> {
    CATALOGUE.iter().find(|(_, i, _)| *i == id).map(|(_, _, t)| *t)
}

#[cfg(test)]
mod tests {
    /// Every rule ID the core refuses with is in the catalogue, so its link on the rules page leads somewhere.
    #[test]
    fn every_rule_a_refusal_names_is_explained() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut missing = Vec::new();
        let mut files = vec![std::path::PathBuf::from(dir)];
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for quoted in text.split('"').skip(1).step_by(2) {
                let (prefix, number) = quoted.split_once('-').unwrap_or(("", ""));
                let id_like = matches!(prefix, "R" | "DR" | "PS" | "SB" | "VR")
                    && number.trim_start_matches(char::is_alphabetic).chars().all(|c| c.is_ascii_digit())
                    && number.chars().any(|c| c.is_ascii_digit());
                if id_like && super::rule_text(quoted).is_none() && !missing.contains(&quoted.to_owned()) {
                    missing.push(quoted.to_owned());
                }
            }
        }
        assert!(missing.is_empty(), "rule IDs without an explanation in the catalogue: {missing:?}");
    }
}
