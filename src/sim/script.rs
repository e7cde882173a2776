//! Scenario scripts: a protocol case as a text file of commands over a [`Cluster`], each
//! followed by the output it must produce (in the spirit of etcd-raft's data-driven
//! interaction tests).
//!
//! # Format
//!
//! A script is a sequence of blocks. A block is a command line, optional input lines, a
//! `----` line, and the expected output, which ends at a blank line (or the end of the file).
//! Lines starting with `#` (and blank lines) before a command are comments. A command with no
//! output expects `ok`.
//!
//! ```text
//! # Node 1 campaigns and wins.
//! cluster 3
//! ----
//! 1: Follower term=0 vote=none leader=none commit=0 applied=0 log=empty
//! ...
//!
//! campaign 1
//! ----
//! 1: Follower term=0 -> Candidate term=1
//! 1->2 RequestVote term=1 last=0@0
//! 1->3 RequestVote term=1 last=0@0
//! ```
//!
//! [`run_script`] runs a script and returns it with the actual output in place of the
//! expected one, so a test compares the two texts, and a rewrite of the file with the result
//! regenerates the expected output (`REWRITE_SCENARIOS=1 cargo test --test
//! scenario_scripts`).
//!
//! # Commands
//!
//! Nodes are numbers (`1`, `2`, ...). Time only passes, and nodes only tick, when a command
//! says so; every input to a node is processed at once (as the production pumps do), and
//! syncs complete at once unless the node holds them.
//!
//! - `cluster <n> [seed=<s>] [pre-vote] [max-append-entries=<k>] [keep=<n>] [chunk=<bytes>]
//!   [snapshot-after=<n>] [promotion-lag=<n>] [lease [drift=<ms>]] [term=<t>] [commit=<c>]`:
//!   a new cluster of `n` nodes (pre-vote off unless asked; `promotion-lag` is how far behind
//!   the leader's log a learner may be and still be promoted; `lease` turns on lease reads,
//!   and pre-vote with them, with a clock drift bound of `drift` ms; `term` and `commit`
//!   apply to every preset node). Input lines preset a
//!   node's log, one per node: `<id>: <term of entry 1> <term of entry 2> ... [term=<t>]
//!   [commit=<c>] [vote=<v>]` (the term defaults to the last entry's). Prints every node's
//!   status.
//! - `campaign <id>`: fires the node's election timer (moving the clock to its deadline); it
//!   starts an election (or a pre-vote). `fire-timer <id>` does the same for any node (a
//!   leader sends heartbeats). `tick <id> <ms>`: the clock moves `ms` on and the node ticks.
//! - `advance <ms>`: time runs (every node ticks every 5 ms, every message is delivered);
//!   prints what changed, not the messages.
//! - `deliver-msgs [<filter>]`: delivers the messages in flight now that match (what they
//!   cause stays in flight). `drop-msgs [<filter>]` loses them. A filter is `<to>`,
//!   `<from>-><to>` (either may be `*`), optionally followed by a message kind
//!   (`RequestVote`, `AppendEntries`, ...) and `first=<n>` (only the oldest `n` of those).
//!   `in-flight` lists the messages in flight.
//! - `stabilize`: delivers messages and completes syncs (not held ones) until nothing is left.
//! - `hold-syncs <id>`: the node's syncs wait; `complete-syncs <id>` completes those waiting;
//!   `release-syncs <id>` completes them and stops holding.
//! - `propose <id> <text>`: proposes the command `<text>` at the node.
//! - `read <id> [lease] [count=<n>]`: asks the node for `n` (default 1) linearizable reads
//!   at once, as one batch (ReadIndex, or lease reads).
//!   It prints `<id>: starts read r<n>`, and later `<id>: serves read r<n> at read index <i>:
//!   last applied <command>` or `<id>: fails read r<n>: <reason>`; a served read that misses
//!   an entry committed before it was asked panics (linearizability violated).
//! - `crash <id>`: a power loss (unsynced writes are lost; messages to and from it too).
//!   `restart <id>`: the node starts again from its disk.
//! - `add-node <id>`: starts a new node on an empty disk, with no members (it waits to be
//!   added). `add-learner <leader> <id>`, `change-voters <leader> <ids...>` (joint
//!   consensus), `remove-member <leader> <id>`: membership changes proposed at the leader;
//!   `transfer-leader <leader> <target>`; `config [<ids>]` prints nodes' configurations.
//! - `partition <ids> | <ids> [| <ids> ...]`: blocks the links between the groups, both
//!   ways; `isolate <id>`; `block <from>-><to>` (one way); `heal` unblocks every link.
//! - `snapshot <id>`: the node snapshots its state machine now and compacts its log.
//! - `status [<id> ...]`: one line per node (with `syncs-waiting=<n>` while syncs wait, and
//!   `disk-stalled=<ms>` once the oldest has waited `max_sync_stall_ms`). `log <id>`: the node's log, one entry a line.
//!
//! # Output
//!
//! Messages as they are sent (`1->2 RequestVote term=2 last=1@1`,
//! `2->1 AppendEntriesResponse term=2 accepted match=3`), and per node: role and term changes
//! (`1: Follower term=1 -> Candidate term=2`), votes (`2: votes for 1 in term 2`), the
//! leader followed (`2: follows 1 in term 2`), commit index changes (`1: commit 1 -> 3`),
//! applied commands (`1: applies 3@2 "hello"`), proposals appended and answered, crashes,
//! restarts and dropped messages. The cluster's invariant checks run after every step; a
//! violation panics with its description.

use std::fmt;

use super::cluster::Cluster;
use super::describe::describe_message;
use super::preset::Preset;
use crate::config::Config;
use crate::message::Message;
use crate::types::NodeId;

/// The line between a command and its output.
const SEPARATOR: &str = "----";

/// A script that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    /// The line (1-based) where the problem is.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ScriptError {}

/// One command with its comments, input and expected output.
#[derive(Clone, Debug, Default)]
struct Block {
    /// Comment and blank lines before the command.
    comments: Vec<String>,
    command: String,
    input: Vec<String>,
    expected: Vec<String>,
}

/// Runs `text` as a script and returns it with each command's actual output in place of the
/// expected one: equal to `text` when every command printed what was expected.
pub fn run_script(text: &str) -> Result<String, ScriptError> {
    let (blocks, trailer) = parse(text)?;
    let mut interpreter = Interpreter::default();
    let mut rendered = String::new();
    for (position, block) in blocks.iter().enumerate() {
        if position > 0 {
            rendered.push('\n');
        }
        for line in &block.comments {
            rendered.push_str(line);
            rendered.push('\n');
        }
        rendered.push_str(&block.command);
        rendered.push('\n');
        for line in &block.input {
            rendered.push_str(line);
            rendered.push('\n');
        }
        rendered.push_str(SEPARATOR);
        rendered.push('\n');
        let output = interpreter.run(&block.command, &block.input);
        if output.is_empty() {
            rendered.push_str("ok\n");
        }
        for line in output {
            rendered.push_str(&line);
            rendered.push('\n');
        }
    }
    for line in trailer {
        rendered.push_str(&line);
        rendered.push('\n');
    }
    Ok(rendered)
}

/// The blocks of a script, and the comment lines after the last one.
fn parse(text: &str) -> Result<(Vec<Block>, Vec<String>), ScriptError> {
    let mut blocks = Vec::new();
    let mut block = Block::default();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((number, line)) = lines.next() {
        if block.command.is_empty() {
            if line.trim().is_empty() || line.starts_with('#') {
                block.comments.push(line.to_owned());
            } else if line == SEPARATOR {
                return Err(ScriptError { line: number + 1, reason: String::from("no command") });
            } else {
                block.command = line.to_owned();
            }
            continue;
        }
        if line != SEPARATOR {
            block.input.push(line.to_owned());
            continue;
        }
        while let Some((_, output)) = lines.next_if(|(_, output)| !output.trim().is_empty()) {
            block.expected.push(output.to_owned());
        }
        // The blank line that ends the output belongs to no block.
        lines.next();
        blocks.push(std::mem::take(&mut block));
    }
    if !block.command.is_empty() {
        return Err(ScriptError {
            line: text.lines().count(),
            reason: format!("the command {:?} has no {SEPARATOR} line", block.command),
        });
    }
    Ok((blocks, block.comments))
}

/// Runs commands over the cluster the script built.
#[derive(Default)]
struct Interpreter {
    cluster: Option<Cluster>,
}

impl Interpreter {
    /// Runs one command: what the cluster recorded, then what the command prints itself. A
    /// malformed command prints `error: ...`.
    fn run(&mut self, command: &str, input: &[String]) -> Vec<String> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let result = match words.split_first() {
            Some((&"cluster", arguments)) => self.create(arguments, input),
            Some((name, arguments)) => match self.cluster.as_mut() {
                Some(cluster) => run_on(cluster, name, arguments, command),
                None => Err(String::from("no cluster yet: start with `cluster <n>`")),
            },
            None => Err(String::from("an empty command")),
        };
        let mut output = self.cluster.as_mut().map(Cluster::take_output).unwrap_or_default();
        match result {
            Ok(lines) => output.extend(lines),
            Err(reason) => output.push(format!("error: {reason}")),
        }
        output
    }

    fn create(&mut self, arguments: &[&str], input: &[String]) -> Result<Vec<String>, String> {
        let (size, options) = arguments.split_first().ok_or("cluster <n> [options]")?;
        let size: u64 = number(size)?;
        let mut config = Config { pre_vote: false, ..Config::default() };
        let mut seed = 1;
        let (mut term, mut commit) = (None, 0);
        for option in options {
            match option.split_once('=') {
                None if *option == "pre-vote" => config.pre_vote = true,
                Some(("seed", value)) => seed = number(value)?,
                Some(("max-append-entries", value)) => {
                    config.max_append_entries = number(value)? as usize;
                }
                Some(("keep", value)) => config.snapshot_keep_entries = number(value)?,
                Some(("chunk", value)) => config.snapshot_chunk_bytes = number(value)? as usize,
                Some(("snapshot-after", value)) => config.snapshot_after_entries = number(value)?,
                Some(("promotion-lag", value)) => config.promotion_max_lag = number(value)?,
                None if *option == "lease" => {
                    config.lease_reads = true;
                    config.pre_vote = true;
                }
                Some(("drift", value)) => config.clock_drift_bound_ms = number(value)?,
                Some(("term", value)) => term = Some(number(value)?),
                Some(("commit", value)) => commit = number(value)?,
                _ => return Err(format!("unknown cluster option {option:?}")),
            }
        }
        let mut presets: Vec<Preset> = (0..size)
            .map(|_| Preset { term: term.unwrap_or(0), commit_index: commit, ..Preset::default() })
            .collect();
        for line in input {
            let (id, log) = line.split_once(':').ok_or("a preset line is `<id>: <terms...>`")?;
            let id: u64 = number(id.trim())?;
            let slot = presets
                .get_mut((id as usize).wrapping_sub(1))
                .ok_or(format!("no node {id} in a cluster of {size}"))?;
            let mut preset = Preset { commit_index: commit, ..Preset::default() };
            let mut node_term = term;
            for word in log.split_whitespace() {
                match word.split_once('=') {
                    None => preset.log_terms.push(number(word)?),
                    Some(("term", value)) => node_term = Some(number(value)?),
                    Some(("commit", value)) => preset.commit_index = number(value)?,
                    Some(("vote", value)) => preset.voted_for = Some(number(value)?),
                    _ => return Err(format!("unknown preset field {word:?}")),
                }
            }
            preset.term = node_term.unwrap_or(preset.log_terms.last().copied().unwrap_or(0));
            *slot = preset;
        }
        config.validate().map_err(|error| error.to_string())?;
        let mut cluster = Cluster::with_presets(presets, config, seed);
        cluster.set_recording(true);
        let status = (1..=size).map(|id| cluster.status_line(id)).collect();
        self.cluster = Some(cluster);
        Ok(status)
    }
}

/// Runs command `name` with `arguments` (the whole line is `command`) on `cluster`.
fn run_on(
    cluster: &mut Cluster,
    name: &str,
    arguments: &[&str],
    command: &str,
) -> Result<Vec<String>, String> {
    let node = |position: usize| -> Result<u64, String> {
        let id = number(arguments.get(position).ok_or(format!("{name} needs a node"))?)?;
        if cluster.ids().contains(&NodeId(id)) { Ok(id) } else { Err(format!("no node {id}")) }
    };
    let up = |id: u64| -> Result<u64, String> {
        if cluster.is_up(id) { Ok(id) } else { Err(format!("node {id} is down")) }
    };
    match name {
        "campaign" => {
            let id = up(node(0)?)?;
            if cluster.role(id) == crate::core::Role::Leader {
                return Err(format!("node {id} already leads"));
            }
            cluster.campaign(id);
        }
        "fire-timer" => cluster.fire_timer(up(node(0)?)?),
        "tick" => {
            let id = up(node(0)?)?;
            cluster.tick(id, number(arguments.get(1).ok_or("tick <id> <ms>")?)?);
        }
        "advance" => {
            let ms = number(arguments.first().ok_or("advance <ms>")?)?;
            cluster.set_recording_messages(false);
            cluster.advance_time(ms);
            cluster.set_recording_messages(true);
        }
        "deliver-msgs" => {
            let mut filter = Filter::parse(arguments)?;
            cluster.deliver_round(|message| filter.take(message));
        }
        "drop-msgs" => {
            let mut filter = Filter::parse(arguments)?;
            cluster.drop_matching(|message| filter.take(message));
        }
        "in-flight" => return Ok(cluster.in_flight().map(describe_message).collect()),
        "stabilize" => cluster.stabilize(),
        "hold-syncs" => cluster.hold_syncs(up(node(0)?)?),
        "complete-syncs" => {
            cluster.complete_syncs(up(node(0)?)?);
        }
        "release-syncs" => {
            cluster.release_syncs(up(node(0)?)?);
        }
        "propose" => {
            let id = up(node(0)?)?;
            let text = command.splitn(3, char::is_whitespace).nth(2).unwrap_or("").trim();
            let _ = cluster.propose(id, text.as_bytes());
        }
        "read" => {
            let id = up(node(0)?)?;
            let mut policy = crate::core::ReadPolicy::ReadIndex;
            let mut count = 1;
            for option in &arguments[1..] {
                match option.split_once('=') {
                    None if *option == "lease" => policy = crate::core::ReadPolicy::Lease,
                    Some(("count", value)) => count = number(value)?,
                    _ => return Err(format!("read <id> [lease] [count=<n>], not {option:?}")),
                }
            }
            let _ = cluster.read_batch(id, policy, count);
        }
        "crash" => {
            cluster.crash(up(node(0)?)?);
        }
        "restart" => {
            let id = node(0)?;
            if cluster.is_up(id) {
                return Err(format!("node {id} is running"));
            }
            cluster.restart(id);
        }
        "partition" => {
            let mut groups: Vec<Vec<u64>> = Vec::new();
            for group in arguments.join(" ").split('|') {
                groups.push(group.split_whitespace().map(number).collect::<Result<_, _>>()?);
            }
            let groups: Vec<&[u64]> = groups.iter().map(Vec::as_slice).collect();
            cluster.partition(&groups);
        }
        "isolate" => cluster.isolate(node(0)?),
        "block" => {
            let link = arguments.first().ok_or("block <from>-><to>")?;
            let (from, to) = link.split_once("->").ok_or("block <from>-><to>")?;
            cluster.block_link(number(from)?, number(to)?);
        }
        "heal" => cluster.heal(),
        "snapshot" => cluster.take_snapshot(up(node(0)?)?),
        "add-node" => {
            let id = number(arguments.first().ok_or("add-node <id>")?)?;
            if cluster.ids().contains(&NodeId(id)) {
                return Err(format!("node {id} exists already"));
            }
            cluster.add_node(id);
        }
        "add-learner" => {
            let leader = up(node(0)?)?;
            let id = number(arguments.get(1).ok_or("add-learner <leader> <id>")?)?;
            let _ = cluster.add_learner(leader, id);
        }
        "change-voters" => {
            let leader = up(node(0)?)?;
            let voters: Vec<u64> =
                arguments.iter().skip(1).map(|id| number(id)).collect::<Result<_, _>>()?;
            let _ = cluster.change_voters(leader, &voters);
        }
        "remove-member" => {
            let leader = up(node(0)?)?;
            let id = number(arguments.get(1).ok_or("remove-member <leader> <id>")?)?;
            let _ = cluster.remove_member(leader, id);
        }
        "transfer-leader" => {
            let leader = up(node(0)?)?;
            let target = number(arguments.get(1).ok_or("transfer-leader <leader> <target>")?)?;
            let _ = cluster.transfer_leadership(leader, target);
        }
        "config" => {
            let ids: Vec<u64> = if arguments.is_empty() {
                cluster.ids().iter().map(|id| id.0).collect()
            } else {
                (0..arguments.len()).map(node).collect::<Result<_, _>>()?
            };
            return Ok(ids.into_iter().map(|id| cluster.configuration_line(id)).collect());
        }
        "status" => {
            let ids: Vec<u64> = if arguments.is_empty() {
                cluster.ids().iter().map(|id| id.0).collect()
            } else {
                (0..arguments.len()).map(node).collect::<Result<_, _>>()?
            };
            return Ok(ids.into_iter().map(|id| cluster.status_line(id)).collect());
        }
        "log" => return Ok(cluster.log_lines(up(node(0)?)?)),
        _ => return Err(format!("unknown command {name:?}")),
    }
    Ok(Vec::new())
}

/// Which messages `deliver-msgs` and `drop-msgs` take: by sender, receiver and kind, and at
/// most the first `limit` of those.
#[derive(Debug, Default)]
struct Filter {
    from: Option<u64>,
    to: Option<u64>,
    kind: Option<String>,
    limit: Option<usize>,
}

impl Filter {
    fn parse(arguments: &[&str]) -> Result<Filter, String> {
        let mut filter = Filter::default();
        for argument in arguments {
            if let Some((from, to)) = argument.split_once("->") {
                filter.from = endpoint(from)?;
                filter.to = endpoint(to)?;
            } else if let Some(limit) = argument.strip_prefix("first=") {
                filter.limit = Some(number(limit)? as usize);
            } else if argument.starts_with(|first: char| first.is_ascii_digit()) {
                filter.to = Some(number(argument)?);
            } else {
                filter.kind = Some((*argument).to_owned());
            }
        }
        Ok(filter)
    }

    /// Whether `message` matches, counting it against the limit when it does.
    fn take(&mut self, message: &Message) -> bool {
        let taken = self.matches(message) && self.limit.is_none_or(|limit| limit > 0);
        if taken && let Some(limit) = self.limit.as_mut() {
            *limit -= 1;
        }
        taken
    }

    fn matches(&self, message: &Message) -> bool {
        self.from.is_none_or(|from| message.from.0 == from)
            && self.to.is_none_or(|to| message.to.0 == to)
            && self.kind.as_ref().is_none_or(|kind| {
                describe_message(message).split_whitespace().nth(1) == Some(kind.as_str())
            })
    }
}

/// A filter's sender or receiver: a node, or `*` for any.
fn endpoint(text: &str) -> Result<Option<u64>, String> {
    if text == "*" { Ok(None) } else { number(text).map(Some) }
}

fn number(text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{text:?} is not a number"))
}
