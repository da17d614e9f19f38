//! The event loop's enforcement hooks (`[enforcement] policy_file`): each forwards one event
//! to the enforcer with what it needs (who the process is, the kernel's maps). Without a
//! policy every hook is a no-op.
use super::Agent;
use crate::{
    attribution::Attribution,
    capture::{event::ConnId, Acted},
    enforce::actuate,
    identity::model::Workload,
    streams::{Output, TrackedExchange},
    usage::UsageRecord,
};

impl Agent {
    /// The attribution of a live process without request headers: what a hold can know.
    fn identify(&mut self, tgid: u32, cgroup_id: u64) -> (Workload, Attribution) {
        let workload = self.identity.workload(tgid, cgroup_id, self.clock.monotonic_now_ns());
        let attribution = self.mapping.mapping().attribute(&workload, &|_: &str| None);
        (workload, attribution)
    }

    /// Holds are decided after the data ring's drain, in the order they were read.
    pub(super) fn decide_holds(&mut self) {
        if self.pending_holds.is_empty() {
            return;
        }
        let holds = std::mem::take(&mut self.pending_holds);
        if self.enforcer.is_none() {
            // No engine, yet a hold (a verdict left by a previous run cannot exist: maps are
            // the run's own). Never leave a process stopped.
            for h in holds {
                let _ = actuate::resume(h.id.tgid);
            }
            return;
        }
        for h in holds {
            let (workload, attribution) = self.identify(h.id.tgid, h.cgroup_id);
            let Some(enforcer) = self.enforcer.as_mut() else { return };
            enforcer.observe(h.id.tgid, h.cgroup_id, &workload, &attribution);
            enforcer.on_hold(h.id, self.capture.enforcement());
        }
        self.discover_cgroups(false);
    }

    pub(super) fn enforce_acted(&mut self, acted: &Acted) {
        if self.enforcer.is_some() {
            let (workload, _) = self.identify(acted.id.tgid, acted.cgroup_id);
            tracing::warn!(
                pid = acted.id.tgid, comm = %workload.comm, cgroup = %workload.cgroup.path,
                signal = acted.signal, failed = acted.failed, "enforcement: signal sent in-kernel"
            );
        }
    }

    /// A connection judged AI traffic: its process is a target, its peer an AI endpoint.
    pub(super) fn enforce_tracked(&mut self, id: ConnId) {
        if self.enforcer.is_none() {
            return;
        }
        if !self.enforcer.as_ref().is_some_and(|e| e.knows(id.tgid)) {
            if let Some(cgroup_id) = actuate::cgroup_id_of(id.tgid) {
                let (workload, attribution) = self.identify(id.tgid, cgroup_id);
                if let Some(e) = self.enforcer.as_mut() {
                    e.observe(id.tgid, cgroup_id, &workload, &attribution);
                }
            }
        }
        if let Some(e) = self.enforcer.as_mut() {
            e.on_tracked(id, self.capture.enforcement());
        }
    }

    pub(super) fn enforce_record(
        &mut self,
        tracked: &TrackedExchange,
        workload: &Workload,
        attribution: &Attribution,
        record: &UsageRecord,
    ) {
        let Some(e) = self.enforcer.as_mut() else { return };
        e.observe(tracked.origin.id.tgid, tracked.origin.cgroup_id, workload, attribution);
        e.on_record(tracked.call, record, self.capture.enforcement());
        self.discover_cgroups(false);
    }

    /// Request starts reserve their estimate, stream progress may cut, calls that ended
    /// without an exchange release theirs. Drained either way.
    pub(super) fn enforce_calls(&mut self, out: &mut Output) {
        let requests = std::mem::take(&mut out.requests);
        let progress = std::mem::take(&mut out.progress);
        let ended = std::mem::take(&mut out.ended);
        if self.enforcer.is_none() {
            return;
        }
        for r in requests {
            let (workload, attribution) = self.identify(r.origin.id.tgid, r.origin.cgroup_id);
            let Some(e) = self.enforcer.as_mut() else { return };
            e.observe(r.origin.id.tgid, r.origin.cgroup_id, &workload, &attribution);
            let labels =
                crate::enforce::labels::of_request(&attribution, &workload, r.provider, r.request_model.as_deref());
            e.on_request(
                r.call,
                &labels,
                r.estimate.input_tokens,
                r.estimate.max_output_tokens,
                self.capture.enforcement(),
            );
        }
        let Some(e) = self.enforcer.as_mut() else { return };
        for p in progress {
            e.on_progress(p.call, p.output_tokens_so_far, self.capture.enforcement());
        }
        for call in ended {
            e.on_ended(call, self.capture.enforcement());
        }
        self.discover_cgroups(false);
    }

    pub(super) fn enforce_closed(&mut self, id: ConnId) {
        if let Some(e) = self.enforcer.as_mut() {
            e.on_conn_closed(id, self.capture.enforcement());
        }
    }

    pub(super) fn enforce_exit(&mut self, tgid: u32) {
        if let Some(e) = self.enforcer.as_mut() {
            e.on_exit(tgid, self.capture.enforcement());
        }
    }

    /// `enforce_failed`: the kernel's counter of failed holds grew since the last tick.
    pub(super) fn enforce_tick(&mut self, enforce_failed: bool) {
        let Some(e) = self.enforcer.as_mut() else { return };
        e.tick(self.capture.enforcement(), self.exporter.as_mut());
        if enforce_failed {
            e.sweep_stopped();
        }
        self.discover_cgroups(true);
        if let Some(e) = self.enforcer.as_ref() {
            self.stats.stopped_resumed = e.stats.stopped_resumed;
            self.stats.cgroups_discovered = e.stats.cgroups_discovered;
        }
    }

    /// New cgroups of a gated entitlement become targets (see `Enforcer::discover_cgroups`):
    /// attributed by the mapping from the cgroup path alone (no process, no headers).
    fn discover_cgroups(&mut self, tick: bool) {
        let Some(e) = self.enforcer.as_mut() else { return };
        let (identity, mapping) = (&self.identity, &self.mapping);
        e.discover_cgroups(tick, self.capture.enforcement(), |path| {
            let workload = identity.cgroup_workload(path);
            let attribution = mapping.mapping().attribute(&workload, &|_: &str| None);
            crate::enforce::labels::of_process(&attribution, &workload, None)
        });
    }

    pub(super) fn reload_policy(&mut self) {
        if let Some(e) = self.enforcer.as_mut() {
            e.reload(self.capture.enforcement());
        }
    }

    pub(super) fn stop_enforcing(&mut self) {
        if let Some(e) = self.enforcer.as_mut() {
            e.shutdown(self.capture.enforcement());
        }
    }
}
