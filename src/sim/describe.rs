//! One-line descriptions of messages and log entries, as scenario scripts print them:
//! `1->2 RequestVote term=2 last=1@1`, `2->1 AppendEntriesResponse term=2 accepted match=3`.

use crate::message::{AppendResponse, Entry, EntryPayload, Message, MessageBody};

/// `message` on one line: sender, receiver, kind, term and the fields that matter.
pub fn describe_message(message: &Message) -> String {
    let head = format!("{}->{}", message.from.0, message.to.0);
    let term = message.term;
    let body = match &message.body {
        MessageBody::RequestVote { last_log_id, leadership_transfer } => {
            let transfer = if *leadership_transfer { " transfer" } else { "" };
            format!("RequestVote term={term} last={last_log_id}{transfer}")
        }
        MessageBody::TimeoutNow => format!("TimeoutNow term={term}"),
        MessageBody::ReadIndex { request, lease } => {
            let lease = if *lease { " lease" } else { "" };
            format!("ReadIndex term={term} request={request}{lease}")
        }
        MessageBody::ReadIndexResponse { request, read_index } => match read_index {
            Some(log_id) => {
                format!("ReadIndexResponse term={term} request={request} index={log_id}")
            }
            None => format!("ReadIndexResponse term={term} request={request} refused"),
        },
        MessageBody::RequestVoteResponse { granted } => {
            format!("RequestVoteResponse term={term} {}", granted_text(*granted))
        }
        MessageBody::PreVote { last_log_id } => format!("PreVote term={term} last={last_log_id}"),
        MessageBody::PreVoteResponse { granted } => {
            format!("PreVoteResponse term={term} {}", granted_text(*granted))
        }
        MessageBody::AppendEntries { prev_log_id, entries, leader_commit, .. } => {
            let listed: Vec<String> = entries.iter().map(describe_entry_id).collect();
            format!(
                "AppendEntries term={term} prev={prev_log_id} commit={leader_commit} entries=[{}]",
                listed.join(" ")
            )
        }
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Accepted { match_index },
            ..
        } => {
            format!("AppendEntriesResponse term={term} accepted match={match_index}")
        }
        MessageBody::AppendEntriesResponse {
            result: AppendResponse::Rejected { rejected_prev_index, hint },
            ..
        } => {
            let conflict = match hint.conflict_term {
                Some(conflict_term) => format!("conflict-term={conflict_term}"),
                None => String::from("log-too-short"),
            };
            format!(
                "AppendEntriesResponse term={term} rejected prev={rejected_prev_index} {conflict} first={}",
                hint.first_index
            )
        }
        MessageBody::InstallSnapshot { snapshot, offset, data } => format!(
            "InstallSnapshot term={term} through={} bytes={}..{} of {}",
            snapshot.meta.last_included,
            offset,
            offset + data.len() as u64,
            snapshot.size
        ),
        MessageBody::InstallSnapshotResponse { last_included, received, installed, .. } => format!(
            "InstallSnapshotResponse term={term} through={last_included} received={received}{}",
            if *installed { " installed" } else { "" }
        ),
    };
    format!("{head} {body}")
}

fn granted_text(granted: bool) -> &'static str {
    if granted { "granted" } else { "rejected" }
}

/// An entry as `index@term`, with a `noop` suffix for a leader's blank entry.
fn describe_entry_id(entry: &Entry) -> String {
    match entry.payload {
        EntryPayload::Command(_) => entry.log_id().to_string(),
        EntryPayload::Blank => format!("{}:noop", entry.log_id()),
        EntryPayload::Configuration(_) => format!("{}:conf", entry.log_id()),
    }
}

/// An entry as `index@term` and its command as text (`(no-op)` for a blank entry).
pub fn describe_entry(entry: &Entry) -> String {
    match &entry.payload {
        EntryPayload::Command(command) => {
            format!("{} {}", entry.log_id(), describe_command(command))
        }
        EntryPayload::Blank => format!("{} (no-op)", entry.log_id()),
        EntryPayload::Configuration(configuration) => {
            format!("{} (configuration: {configuration})", entry.log_id())
        }
    }
}

/// A command's bytes as text, quoted; bytes that are not printable are escaped.
pub fn describe_command(command: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(command))
}
