//! The cluster page: members, leader, readiness, KMS state, and the admin actions the CLI has
//! (transfer leadership, promote, remove), each behind a confirmation page.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::page::{Done, Page};
use crate::pb;

pub async fn show(page: Page, Query(q): Query<Done>) -> Response {
    let mut admin = page.call.admin();
    let server = admin.server_status(page.call.req(pb::ServerStatusRequest {})).await;
    let cluster = admin.cluster_status(page.call.req(pb::ClusterStatusRequest {})).await;
    let node = html! {
        @if let Ok(s) = &server {
            @let s = s.get_ref();
            dl class="facts" {
                dt { "This node" } dd id="node" { (s.node_id) " (" (s.state) "), version " (s.version) }
                dt { "Readiness" } dd id="readiness" { @if s.ready { "ready" } @else { (s.not_ready) } }
            }
        }
    };
    let cluster = match cluster {
        Ok(c) => c.into_inner(),
        // What anyone may know (as `vaultctl status` shows it), and why the rest is not shown.
        Err(s) => {
            let text = format!("{}: {}", crate::observe::code_name(s.code()), s.message());
            let status = super::page::http_status(s.code());
            return page.render_status(status, "Cluster", None, Some(&text), node);
        }
    };
    let kms = admin.kms_status(page.call.req(pb::KmsStatusRequest {})).await;
    let body = html! {
        (node)
        dl class="facts" {
            dt { "Leader" } dd id="leader" { (cluster.leader_id.map_or("none".to_string(), |l| l.to_string())) }
            dt { "Term" } dd id="term" { (cluster.term) }
            dt { "Feature level" } dd id="feature-level" { (cluster.feature_level) " (this node understands " (cluster.node_feature_level) ")" }
            dt { "Applied index" } dd { (opt(cluster.last_applied_index)) " of " (opt(cluster.last_log_index)) }
            dt { "Keys" } dd id="kms" { (kms_text(&kms)) }
        }
        h2 { "Members" }
        table id="members" {
            thead { tr { th { "id" } th { "Raft address" } th { "API address" } th { "role" } th { "matched index" } th { "lag" } th { "actions" } } }
            tbody {
                @for m in &cluster.members {
                    tr class="member" data-id=(m.id) {
                        td { (m.id) } td { (m.raft_addr) } td { (m.api_addr) } td { (m.role) }
                        td { (opt(m.matched_index)) } td { (opt(m.lag)) }
                        td { (actions(m)) }
                    }
                }
            }
        }
    };
    page.render("Cluster", q.done.as_deref(), body)
}

fn opt(v: Option<u64>) -> String {
    v.map_or("—".into(), |v| v.to_string())
}

fn kms_text(kms: &Result<tonic::Response<pb::KmsStatusResponse>, tonic::Status>) -> String {
    match kms {
        Ok(k) => {
            let k = k.get_ref();
            let mut t = format!("{} KMS, cluster key {}", k.kind, k.cluster_key_id);
            if k.running {
                t.push_str(&format!(
                    "; re-wrap running: {} of {} done, {} failed",
                    k.pass_done, k.pass_total, k.pass_failed
                ));
            } else {
                t.push_str(&format!("; {} of {} versions still to re-wrap", k.pending_versions, k.total_versions));
            }
            if !k.missing_key_ids.is_empty() {
                t.push_str(&format!("; this node lacks keys {}", k.missing_key_ids.join(", ")));
            }
            if !k.last_error.is_empty() {
                t.push_str(&format!("; last error: {}", k.last_error));
            }
            t
        }
        Err(s) => format!("unknown ({})", s.message()),
    }
}

fn actions(m: &pb::MemberStatus) -> Markup {
    let choices: &[(&str, &str)] = match m.role.as_str() {
        "learner" => &[("promote", "Promote"), ("remove", "Remove")],
        "leader" => &[("remove", "Remove")],
        _ => &[("transfer", "Make leader"), ("remove", "Remove")],
    };
    html! {
        @for (action, label) in choices {
            form class="member-action" method="get" action="/cluster/confirm" {
                input type="hidden" name="action" value=(action);
                input type="hidden" name="node" value=(m.id);
                button type="submit" { (label) }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct ActionQuery {
    action: String,
    node: u64,
}

fn describe(action: &str, node: u64) -> Option<String> {
    Some(match action {
        "transfer" => format!("Hand leadership to node {node}"),
        "promote" => format!("Make learner {node} a voter"),
        "remove" => format!("Remove node {node} from the cluster"),
        _ => return None,
    })
}

pub async fn confirm(page: Page, Query(q): Query<ActionQuery>) -> Response {
    let Some(what) = describe(&q.action, q.node) else {
        return page.render_status(StatusCode::BAD_REQUEST, "Cluster", None, Some("unknown action"), html! {});
    };
    let body = html! {
        p class="confirm" { (what) "?" }
        form id="confirm-form" method="post" action="/cluster/action" {
            (page.csrf_input())
            input type="hidden" name="action" value=(q.action);
            input type="hidden" name="node" value=(q.node);
            button id="confirm" type="submit" class="danger" { "Yes: " (what) }
            " " a href="/cluster" { "Cancel" }
        }
    };
    page.render("Confirm", None, body)
}

#[derive(Deserialize)]
pub struct ActionForm {
    action: String,
    node: u64,
    #[serde(default)]
    csrf: String,
}

pub async fn act(page: Page, Form(f): Form<ActionForm>) -> Response {
    if let Some(r) = page.csrf_refusal(&f.csrf) {
        return r;
    }
    let mut admin = page.call.admin();
    let req = page.call.req(pb::MemberRequest { id: f.node });
    let result = match f.action.as_str() {
        "transfer" => admin.transfer_leader(req).await,
        "promote" => admin.promote_member(req).await,
        "remove" => admin.remove_member(req).await,
        _ => return page.render_status(StatusCode::BAD_REQUEST, "Cluster", None, Some("unknown action"), html! {}),
    };
    match result {
        Ok(_) => {
            let done = describe(&f.action, f.node).unwrap_or_default() + ": done";
            Redirect::to(&format!("/cluster?done={}", urlencode(&done))).into_response()
        }
        Err(s) => page.failed("Cluster", &s),
    }
}

/// Percent-encodes `s` for a query value.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
