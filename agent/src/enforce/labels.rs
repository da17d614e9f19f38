//! A call's labels for entitlement matching, from the three places they come from: a live
//! process at a hold (attribution + workload + the connection's provider, no model yet), a
//! usage record, and a ledger row. All three must agree, or a restart would count differently.
use super::policy::Labels;
use crate::{attribution::Attribution, identity::model::Workload, usage::UsageRecord};

/// The model a call counts under: the one that answered, else the one asked for (the ledger's
/// rollups keep `coalesce(response_model, request_model)`, so the seed can only match that).
pub fn model_of<'a>(request_model: Option<&'a str>, response_model: Option<&'a str>) -> Option<&'a str> {
    response_model.filter(|m| !m.is_empty()).or(request_model.filter(|m| !m.is_empty()))
}

/// Labels of a process about to make a call (`provider` when the connection's endpoint is
/// known; the model is never known before the request leaves).
pub fn of_process(attribution: &Attribution, workload: &Workload, provider: Option<&str>) -> Labels {
    let pod = workload.pod.as_ref();
    Labels {
        team: attribution.team.clone(),
        cost_center: attribution.cost_center.clone(),
        product: attribution.product.clone(),
        tenant: attribution.tenant.clone(),
        app: attribution.app.clone(),
        namespace: pod.map(|p| p.namespace.clone()),
        workload: pod.and_then(|p| p.workload_name.clone()),
        provider: provider.map(str::to_string),
        model: None,
    }
}

/// Labels of a parsed request (the model asked for, the endpoint's provider).
pub fn of_request(attribution: &Attribution, workload: &Workload, provider: &str, model: Option<&str>) -> Labels {
    Labels {
        model: model.filter(|m| !m.is_empty()).map(str::to_string),
        ..of_process(attribution, workload, Some(provider))
    }
}

pub fn of_record(r: &UsageRecord) -> Labels {
    Labels {
        team: r.team.clone(),
        cost_center: r.cost_center.clone(),
        product: r.product.clone(),
        tenant: r.tenant.clone(),
        app: r.app.clone(),
        namespace: r.k8s_namespace.clone(),
        workload: r.k8s_workload.clone(),
        provider: Some(r.provider.to_string()),
        model: model_of(r.request_model.as_deref(), r.response_model.as_deref()).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_give_every_label() {
        let mut r = UsageRecord::sample();
        r.team = "blue".into();
        r.k8s_namespace = Some("ns".into());
        r.request_model = None;
        r.response_model = Some("gpt-4o".into());
        let l = of_record(&r);
        assert_eq!((l.team.as_str(), l.namespace.as_deref(), l.model.as_deref()), ("blue", Some("ns"), Some("gpt-4o")));
        assert_eq!(model_of(Some(""), Some("x")), Some("x"));
        assert_eq!(model_of(Some("a"), Some("x")), Some("x"));
        assert_eq!(model_of(Some("a"), None), Some("a"));
    }
}
