//! The membership API of a `raft-kv` node: `GET /v1/members`, `POST /v1/members` (add a node
//! as a voter), `DELETE /v1/members/{id}` and `POST /v1/leader` (transfer leadership).
//!
//! Every change runs on the leader (a follower answers `307` to it, like every write), one at
//! a time: a second request while one runs is `409 {"error":"change_in_progress"}`. Adding a
//! node adds it as a learner, waits until its log has caught up with the leader's, then
//! promotes it to voter through joint consensus; the whole of it must finish within
//! `--request-timeout-ms` or the answer is `504 {"error":"outcome_unknown"}` (the change may
//! still complete: read `GET /v1/members`). Adding a node that is already a voter at the same
//! addresses, and removing a node that is not a member, answer `200` with the members, so a
//! client may retry either after a `504`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response as HttpResponse};
use raft_consensus::{Configuration, MemberAddress, MembershipError, NodeId, Status};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::{AppState, Rejection, error, redirect};

/// The largest membership request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 4096;

/// The members as this node sees them: `{"leader": ID|null, "members": [...]}`.
pub(crate) fn members_json(status: &Status, configuration: &Configuration) -> Value {
    let members: Vec<Value> = configuration
        .members()
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<NodeId>>()
        .into_iter()
        .map(|id| {
            let address = configuration.address(id).cloned().unwrap_or_default();
            json!({
                "id": id.0,
                "raft_addr": address.raft_addr,
                "http_addr": address.client_addr,
                "voter": configuration.is_voter(id),
            })
        })
        .collect();
    json!({ "leader": status.leader_id.map(|leader| leader.0), "members": members })
}

/// `GET /v1/members`: this node's own view.
pub(crate) async fn list_members(State(state): State<Arc<AppState>>) -> HttpResponse {
    let status = state.node.status();
    axum::Json(members_json(&status, &status.configuration)).into_response()
}

/// The body of `POST /v1/members`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    id: u64,
    raft_addr: String,
    http_addr: String,
}

/// `POST /v1/members`: adds a node as a voter (learner, catch up, promotion).
pub(crate) async fn add_member(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    body: Body,
) -> HttpResponse {
    let started = Instant::now();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").into_response();
    };
    let Ok(request) = serde_json::from_slice::<AddBody>(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "malformed_json").into_response();
    };
    if request.id == 0 {
        return error(StatusCode::BAD_REQUEST, "invalid_id").into_response();
    }
    if !state.may_add_members {
        // A single node started without peer TLS: growing it would put peers on plain TCP.
        return error(StatusCode::BAD_REQUEST, "peer_tls_required").into_response();
    }
    let parse = |text: &str| text.trim().parse::<SocketAddr>().ok();
    let (Some(raft_addr), Some(http_addr)) = (parse(&request.raft_addr), parse(&request.http_addr))
    else {
        return error(StatusCode::BAD_REQUEST, "invalid_address").into_response();
    };
    let id = NodeId(request.id);
    let address =
        MemberAddress { raft_addr: raft_addr.to_string(), client_addr: http_addr.to_string() };
    let status = state.node.status();
    if let Err(rejection) = check_leader(&state, &status, &uri) {
        return rejection.into_response();
    }
    let configuration = &status.configuration;
    if configuration.is_voter(id) {
        if configuration.address(id) == Some(&address) {
            // A retry of an addition that completed.
            return axum::Json(members_json(&status, configuration)).into_response();
        }
        return error(StatusCode::BAD_REQUEST, "id_in_use").into_response();
    }
    if configuration.learners().contains(&id) && configuration.address(id) != Some(&address) {
        // A learner left by an earlier request resumes only with the same addresses.
        return error(StatusCode::BAD_REQUEST, "id_in_use").into_response();
    }
    let in_use = configuration.addresses().iter().any(|(other, known)| {
        *other != id
            && (known.raft_addr == address.raft_addr || known.client_addr == address.client_addr)
    });
    if in_use || raft_addr == state.raft_addr || http_addr == state.http_addr {
        return error(StatusCode::BAD_REQUEST, "address_in_use").into_response();
    }
    let Ok(_change) = state.membership_lock.try_lock() else {
        return change_in_progress();
    };
    let timeout = state.limits.request_timeout.saturating_sub(started.elapsed());
    let change = state.node.add_voter(id, address, timeout);
    match tokio::time::timeout(timeout, change).await {
        Ok(Ok(configuration)) => answer(&state, &configuration),
        Ok(Err(membership_error)) => membership_failure(&state, membership_error, &uri),
        Err(_) => outcome_unknown(),
    }
}

/// `DELETE /v1/members/{id}`: removes a member (the leader too: it hands over and steps
/// down once the change commits).
pub(crate) async fn remove_member(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
) -> HttpResponse {
    let Ok(id) = id.parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, "invalid_id").into_response();
    };
    let id = NodeId(id);
    let status = state.node.status();
    if let Err(rejection) = check_leader(&state, &status, &uri) {
        return rejection.into_response();
    }
    if !status.configuration.is_member(id) {
        // Already gone (a retry of a removal that completed).
        return axum::Json(members_json(&status, &status.configuration)).into_response();
    }
    let Ok(_change) = state.membership_lock.try_lock() else {
        return change_in_progress();
    };
    let change = state.node.remove_member(id);
    match tokio::time::timeout(state.limits.request_timeout, change).await {
        Ok(Ok(configuration)) => answer(&state, &configuration),
        Ok(Err(membership_error)) => membership_failure(&state, membership_error, &uri),
        Err(_) => outcome_unknown(),
    }
}

/// The body of `POST /v1/leader`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaderBody {
    id: u64,
}

/// `POST /v1/leader`: hands leadership to a caught-up voter and answers once it leads.
pub(crate) async fn transfer_leader(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    body: Body,
) -> HttpResponse {
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large").into_response();
    };
    let Ok(request) = serde_json::from_slice::<LeaderBody>(&bytes) else {
        return error(StatusCode::BAD_REQUEST, "malformed_json").into_response();
    };
    let target = NodeId(request.id);
    let status = state.node.status();
    if status.leader_id == Some(target) {
        return axum::Json(json!({ "leader": target.0 })).into_response();
    }
    if let Err(rejection) = check_leader(&state, &status, &uri) {
        return rejection.into_response();
    }
    if !status.configuration.is_voter(target) {
        return (StatusCode::CONFLICT, axum::Json(json!({ "error": "not_a_voter" })))
            .into_response();
    }
    let caught_up = status.followers.iter().any(|(follower, matched)| {
        *follower == target
            && matched.0.saturating_add(state.promotion_max_lag) >= status.last_log_index.0
    });
    if !caught_up {
        return (StatusCode::CONFLICT, axum::Json(json!({ "error": "not_caught_up" })))
            .into_response();
    }
    let Ok(_change) = state.membership_lock.try_lock() else {
        return change_in_progress();
    };
    match state.node.transfer_leadership(target, state.limits.request_timeout).await {
        Ok(()) => axum::Json(json!({ "leader": target.0 })).into_response(),
        Err(membership_error) => membership_failure(&state, membership_error, &uri),
    }
}

/// Passes when this node leads; otherwise the `307` (or `503`) every write gets.
fn check_leader(state: &AppState, status: &Status, uri: &Uri) -> Result<(), Rejection> {
    if status.is_leader() { Ok(()) } else { Err(redirect(state, status.leader_id, uri)) }
}

/// `200` with the members after a change.
fn answer(state: &AppState, configuration: &Configuration) -> HttpResponse {
    let status = state.node.status();
    axum::Json(members_json(&status, configuration)).into_response()
}

fn change_in_progress() -> HttpResponse {
    (StatusCode::CONFLICT, axum::Json(json!({ "error": "change_in_progress" }))).into_response()
}

fn outcome_unknown() -> HttpResponse {
    error(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown").into_response()
}

/// The HTTP answer to a change the node refused or could not finish.
fn membership_failure(state: &AppState, failure: MembershipError, uri: &Uri) -> HttpResponse {
    match failure {
        MembershipError::NotLeader { leader_hint } => {
            redirect(state, leader_hint, uri).into_response()
        }
        MembershipError::ChangeInProgress => change_in_progress(),
        MembershipError::NotCaughtUp { .. }
        | MembershipError::OutcomeUnknown { .. }
        | MembershipError::TransferTimedOut { .. } => outcome_unknown(),
        MembershipError::Invalid { reason } => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": "invalid_change", "detail": reason })),
        )
            .into_response(),
        MembershipError::Shutdown => {
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response()
        }
    }
}

/// The lock that keeps membership requests one at a time on this node.
pub(crate) type MembershipLock = Arc<tokio::sync::Mutex<()>>;
