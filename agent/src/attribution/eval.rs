//! Compiled rules and their evaluation against a workload and request headers.
//!
//! Every check can explain a failure; the explanation is only formatted when asked (`why`),
//! so the hot path (`Mapping::attribute`) allocates nothing for failed conditions. No
//! explanation ever contains a request header value.
use std::cell::RefCell;
use std::collections::BTreeMap;

use super::glob::Glob;
use super::template::{Missing, Template, Var};
use super::Attribution;
use crate::identity::model::{PodInfo, Workload};

/// One or more globs; a value matches when any does.
#[derive(Debug, Clone)]
pub(crate) struct Patterns(pub(crate) Vec<Glob>);

impl Patterns {
    fn matches(&self, value: &str) -> bool {
        self.0.iter().any(|g| g.matches(value))
    }

    /// The tail of a failure message: `does not match "x"` or `not in [a, b]`.
    fn miss(&self) -> String {
        match self.0.as_slice() {
            [one] => format!("does not match \"{one}\""),
            many => format!("not in [{}]", many.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// A Kubernetes `LabelSelector` requirement operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone)]
pub(crate) struct Requirement {
    pub(crate) key: String,
    pub(crate) op: Op,
    pub(crate) values: Vec<String>,
}

/// A Kubernetes `LabelSelector`: `matchLabels` and `matchExpressions`, all AND-ed. Values are
/// compared exactly (no globs), as Kubernetes does.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selector {
    pub(crate) match_labels: Vec<(String, String)>,
    pub(crate) exprs: Vec<Requirement>,
}

impl Selector {
    fn check(&self, map: &BTreeMap<String, String>, why: bool) -> Result<(), String> {
        for (k, want) in &self.match_labels {
            match map.get(k) {
                Some(v) if v == want => {}
                Some(v) => return fail(why, || format!("{k:?} = {v:?}, matchLabels wants {want:?}")),
                None => return fail(why, || format!("{k:?} is missing (matchLabels wants {want:?})")),
            }
        }
        for r in &self.exprs {
            let value = map.get(&r.key);
            let listed = || format!("[{}]", r.values.join(", "));
            let k = &r.key;
            match (r.op, value) {
                (Op::In, Some(v)) if r.values.contains(v) => {}
                (Op::In, Some(v)) => return fail(why, || format!("{k:?} = {v:?} not in {}", listed())),
                (Op::In, None) => return fail(why, || format!("{k:?} is missing (In {})", listed())),
                (Op::NotIn, Some(v)) if r.values.contains(v) => {
                    return fail(why, || format!("{k:?} = {v:?} is in {} (NotIn)", listed()))
                }
                (Op::NotIn, _) => {}
                (Op::Exists, Some(_)) => {}
                (Op::Exists, None) => return fail(why, || format!("{k:?} does not exist")),
                (Op::DoesNotExist, None) => {}
                (Op::DoesNotExist, Some(_)) => return fail(why, || format!("{k:?} exists (DoesNotExist)")),
            }
        }
        Ok(())
    }
}

/// One `[rule.match]` condition.
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Namespace(Patterns),
    Workload(Patterns),
    WorkloadKind(Patterns),
    PodLabels(Selector),
    PodAnnotations(Selector),
    ContainerImage(Patterns),
    ContainerName(Patterns),
    SystemdUnit(Patterns),
    CgroupPath(Patterns),
    Exe(Patterns),
    ExeName(Patterns),
    Comm(Patterns),
    User(Patterns),
    Uid(Vec<u32>),
    /// `idx` indexes the mapping's header names.
    Header {
        idx: usize,
        name: String,
        patterns: Patterns,
    },
}

fn fail(why: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    Err(if why { msg() } else { String::new() })
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn exe_name(exe: &str) -> &str {
    exe.rsplit('/').next().unwrap_or(exe)
}

/// The workload and the request's headers, read lazily and at most once per name.
pub(crate) struct Cx<'a> {
    pub(crate) w: &'a Workload,
    headers: &'a dyn Fn(&str) -> Option<String>,
    names: &'a [String],
    cache: RefCell<Vec<Option<Option<String>>>>,
}

impl<'a> Cx<'a> {
    pub(crate) fn new(w: &'a Workload, headers: &'a dyn Fn(&str) -> Option<String>, names: &'a [String]) -> Cx<'a> {
        Cx { w, headers, names, cache: RefCell::new(vec![None; names.len()]) }
    }

    fn header(&self, idx: usize) -> Option<String> {
        let mut cache = self.cache.borrow_mut();
        let slot = cache.get_mut(idx)?;
        if slot.is_none() {
            *slot = Some((self.headers)(&self.names[idx]));
        }
        slot.clone().flatten()
    }

    fn pod(&self) -> Option<&'a PodInfo> {
        self.w.pod.as_ref()
    }

    /// A template variable's value, if the workload (or request) has one.
    pub(crate) fn var(&self, v: &Var) -> Option<String> {
        let pod = self.pod();
        let container = self.w.container.as_ref();
        let s = |x: Option<&str>| x.and_then(nonempty).map(str::to_string);
        match v {
            Var::Namespace => s(pod.map(|p| p.namespace.as_str())),
            Var::Pod => s(pod.map(|p| p.name.as_str())),
            Var::Workload => s(pod.and_then(|p| p.workload_name.as_deref())),
            Var::WorkloadKind => s(pod.and_then(|p| p.workload_kind.as_deref())),
            Var::Label(k) => s(pod.and_then(|p| p.labels.get(k)).map(String::as_str)),
            Var::Annotation(k) => s(pod.and_then(|p| p.annotations.get(k)).map(String::as_str)),
            Var::Container => s(container.map(|c| c.name.as_str())),
            Var::Image => s(container.map(|c| c.image.as_str())),
            Var::Unit => s(self.w.cgroup.systemd_unit.as_deref()),
            Var::ExeName => s(Some(exe_name(&self.w.exe))),
            Var::Comm => s(Some(&self.w.comm)),
            Var::User => s(self.w.user.as_deref()),
            Var::Uid => self.w.uid.map(|u| u.to_string()),
            Var::Header(idx, _) => self.header(*idx),
        }
    }
}

impl Cond {
    /// `Ok` when the condition holds; otherwise the reason (empty unless `why`).
    pub(crate) fn check(&self, cx: &Cx<'_>, why: bool) -> Result<(), String> {
        let w = cx.w;
        let pod = cx.pod();
        let container = w.container.as_ref();
        const NO_POD: &str = "not in a pod";
        const NO_CONTAINER: &str = "no known container";
        match self {
            Cond::Namespace(p) => text("namespace", pod.map(|p| p.namespace.as_str()).ok_or(NO_POD), p, why),
            Cond::Workload(p) => {
                let v = pod.ok_or(NO_POD).and_then(|p| p.workload_name.as_deref().ok_or("no workload controller"));
                text("workload", v, p, why)
            }
            Cond::WorkloadKind(p) => {
                let v = pod.ok_or(NO_POD).and_then(|p| p.workload_kind.as_deref().ok_or("no workload controller"));
                text("workload_kind", v, p, why)
            }
            Cond::PodLabels(sel) => match pod {
                None => fail(why, || format!("pod_labels: {NO_POD}")),
                Some(p) => sel.check(&p.labels, why).map_err(|m| if why { format!("pod_labels: {m}") } else { m }),
            },
            Cond::PodAnnotations(sel) => match pod {
                None => fail(why, || format!("pod_annotations: {NO_POD}")),
                Some(p) => {
                    sel.check(&p.annotations, why).map_err(|m| if why { format!("pod_annotations: {m}") } else { m })
                }
            },
            Cond::ContainerImage(p) => {
                text("container_image", container.map(|c| c.image.as_str()).ok_or(NO_CONTAINER), p, why)
            }
            Cond::ContainerName(p) => {
                text("container_name", container.map(|c| c.name.as_str()).ok_or(NO_CONTAINER), p, why)
            }
            Cond::SystemdUnit(p) => {
                text("systemd_unit", w.cgroup.systemd_unit.as_deref().ok_or("no systemd unit"), p, why)
            }
            Cond::CgroupPath(p) => text("cgroup_path", nonempty(&w.cgroup.path).ok_or("unknown"), p, why),
            Cond::Exe(p) => text("exe", nonempty(&w.exe).ok_or("unknown"), p, why),
            Cond::ExeName(p) => text("exe_name", nonempty(&w.exe).map(exe_name).ok_or("unknown"), p, why),
            Cond::Comm(p) => text("comm", nonempty(&w.comm).ok_or("unknown"), p, why),
            Cond::User(p) => text("user", w.user.as_deref().ok_or("unknown user"), p, why),
            Cond::Uid(uids) => match w.uid {
                Some(u) if uids.contains(&u) => Ok(()),
                Some(u) => fail(why, || {
                    let list = uids.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
                    format!("uid: {u} not in [{list}]")
                }),
                None => fail(why, || "uid: unknown".to_string()),
            },
            Cond::Header { idx, name, patterns } => match cx.header(*idx) {
                // Never show the value: it may be a secret.
                Some(v) if patterns.matches(&v) => Ok(()),
                Some(_) => fail(why, || format!("header {name}: no match")),
                None => fail(why, || format!("header {name}: missing")),
            },
        }
    }
}

/// A string condition: the value (or why there is none) against the patterns.
fn text(key: &str, value: Result<&str, &str>, p: &Patterns, why: bool) -> Result<(), String> {
    match value {
        Ok(v) if p.matches(v) => Ok(()),
        Ok(v) => fail(why, || format!("{key}: {v:?} {}", p.miss())),
        Err(none) => fail(why, || format!("{key}: {none}")),
    }
}

/// `[rule.set]`.
#[derive(Debug, Clone)]
pub(crate) struct SetTemplates {
    pub(crate) team: Template,
    pub(crate) cost_center: Option<Template>,
    pub(crate) product: Option<Template>,
    pub(crate) tenant: Option<Template>,
    pub(crate) app: Option<Template>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) name: String,
    pub(crate) conds: Vec<Cond>,
    pub(crate) set: SetTemplates,
}

impl Rule {
    /// The attribution this rule produces, or why it does not match (empty unless `why`).
    pub(crate) fn eval(&self, cx: &Cx<'_>, why: bool) -> Result<Attribution, String> {
        for c in &self.conds {
            c.check(cx, why)?;
        }
        let render = |key: &str, t: &Template| {
            t.render(&mut |v| cx.var(v)).map_err(|m| match (why, m) {
                (false, _) => String::new(),
                (true, Missing::Var(v)) => format!("set.{key}: {v} has no value"),
                (true, Missing::Empty) => format!("set.{key}: value is empty"),
            })
        };
        let opt = |key: &str, t: &Option<Template>| t.as_ref().map(|t| render(key, t)).transpose();
        let s = &self.set;
        Ok(Attribution {
            team: render("team", &s.team)?,
            cost_center: opt("cost_center", &s.cost_center)?,
            product: opt("product", &s.product)?,
            tenant: opt("tenant", &s.tenant)?,
            app: opt("app", &s.app)?,
            rule: Some(self.name.clone()),
        })
    }
}
