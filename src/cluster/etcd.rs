//! The etcd cluster, asked through etcd's own JSON gateway (`/v3/...` on the client port,
//! served by etcd 3.4 and newer) with `curl` on a node running a member (a control plane when
//! etcd is stacked, an etcd node when it is external) and the healthcheck client certificate
//! khactl placed there. Real clusters run etcd as a static pod with no
//! `etcdctl` on the host, so this is what works everywhere.

use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::remote::{NodeHandle, RemoteCommand};

/// The local member's client endpoint on a control plane (its server cert names 127.0.0.1).
pub const LOCAL_ENDPOINT: &str = "https://127.0.0.1:2379";
const TIMEOUT: Duration = Duration::from_secs(20);

/// `$1` = endpoint, `$2` = API path, `$3` = JSON body; prints the answer. The certificate
/// paths are constants of this program.
const CALL: &str = r#"exec curl -sS --fail --max-time 5 \
  --cacert /etc/kubernetes/pki/etcd/ca.crt \
  --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
  --key /etc/kubernetes/pki/etcd/healthcheck-client.key \
  -X POST --data-binary "$3" "$1$2"
"#;

/// Prints `URL ok` or `URL down` for each client URL given: etcd's `/health` with the
/// healthcheck client certificate.
const HEALTH: &str = r#"for url in "$@"; do
  out=$(curl -sS --max-time 3 --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key /etc/kubernetes/pki/etcd/healthcheck-client.key "$url/health" 2>/dev/null) || out=
  case $out in *'"health":"true"'*) echo "$url ok" ;; *) echo "$url down" ;; esac
done
"#;

/// Prints `URL STATUS-JSON` (one line) or `URL -` for each client URL given: etcd's
/// `Maintenance.Status` through the JSON gateway, with the healthcheck client certificate.
const STATUS: &str = r#"for url in "$@"; do
  out=$(curl -sS --fail --max-time 3 --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key /etc/kubernetes/pki/etcd/healthcheck-client.key \
    -X POST --data-binary '{}' "$url/v3/maintenance/status" 2>/dev/null | tr -d '\n') || out=
  echo "$url ${out:--}"
done
"#;

/// What one member says of itself (`Maintenance.Status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub member_id: u64,
    /// The leader this member follows (0: none).
    pub leader: u64,
    pub db_size: u64,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub id: u64,
    /// Empty for a learner that has not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
    /// `/health` answered true (None: not asked, or the member has no client URL yet).
    pub healthy: Option<bool>,
}

impl Member {
    /// Whether this member is `name` at `address` (by name or by its peer URL).
    pub fn is_node(&self, name: &str, address: &str) -> bool {
        self.name == name || self.peer_urls.iter().any(|u| *u == peer_url(address))
    }
}

/// kubeadm's peer URL for a member advertising `address`.
pub fn peer_url(address: &str) -> String {
    if address.contains(':') {
        format!("https://[{address}]:2380")
    } else {
        format!("https://{address}:2380")
    }
}

fn call(path: &str, body: &str) -> RemoteCommand {
    RemoteCommand::script("etcd-api", CALL, [LOCAL_ENDPOINT, path, body]).timeout(TIMEOUT)
}

/// The member list as the local member on `from` sees it, each member's health asked too.
pub async fn members(from: &NodeHandle) -> anyhow::Result<Vec<Member>> {
    let out = from
        .run(&call("/v3/cluster/member/list", "{}").read_only())
        .await
        .context("listing the etcd members")?;
    let mut members = parse_members(&out.stdout_str())?;
    let urls: Vec<String> = members
        .iter()
        .filter_map(|m| m.client_urls.first().cloned())
        .collect();
    if !urls.is_empty() {
        let health = RemoteCommand::script("etcd-health", HEALTH, urls)
            .read_only()
            .timeout(TIMEOUT);
        let text = from.run(&health).await?.stdout_str();
        for m in &mut members {
            if let Some(url) = m.client_urls.first() {
                m.healthy = Some(text.lines().any(|l| *l == format!("{url} ok")));
            }
        }
    }
    Ok(members)
}

/// Each member's own status, asked on its first client URL from `from`, by member id;
/// members that do not answer are left out.
pub async fn statuses(
    from: &NodeHandle,
    members: &[Member],
) -> anyhow::Result<std::collections::BTreeMap<u64, MemberStatus>> {
    let urls: Vec<String> = members
        .iter()
        .filter_map(|m| m.client_urls.first().cloned())
        .collect();
    let mut out = std::collections::BTreeMap::new();
    if urls.is_empty() {
        return Ok(out);
    }
    let cmd = RemoteCommand::script("etcd-status", STATUS, urls)
        .read_only()
        .timeout(TIMEOUT);
    let text = from.run(&cmd).await?.stdout_str();
    for line in text.lines() {
        if let Some((_, json)) = line.split_once(' ')
            && let Some(s) = parse_status(json)
        {
            out.insert(s.member_id, s);
        }
    }
    Ok(out)
}

/// Parses the gateway's `StatusResponse` (64-bit numbers as strings); `None` if it is not one.
pub fn parse_status(json: &str) -> Option<MemberStatus> {
    let v: Value = serde_json::from_str(json.trim()).ok()?;
    let num = |v: &Value| match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    Some(MemberStatus {
        member_id: num(v.get("header")?.get("member_id")?)?,
        leader: v.get("leader").and_then(num).unwrap_or(0),
        db_size: v.get("dbSize").and_then(num).unwrap_or(0),
        version: v
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Removes a member (not read-only: callers run it through the gate as a step).
pub async fn remove(from: &NodeHandle, id: u64) -> anyhow::Result<()> {
    // The gateway takes 64-bit ids as JSON strings (protobuf's JSON mapping).
    let body = format!("{{\"ID\":\"{id}\"}}");
    from.run(&call("/v3/cluster/member/remove", &body))
        .await
        .with_context(|| format!("removing etcd member {id:x}"))?;
    Ok(())
}

/// Adds a learner with `peer_url` (`Cluster.MemberAdd` with `isLearner`): a member that
/// receives the log but does not vote, so the quorum does not grow before it has caught up.
/// Returns its id. Not read-only: callers run it through the gate as a step.
pub async fn add_learner(from: &NodeHandle, peer_url: &str) -> anyhow::Result<u64> {
    let body = serde_json::json!({ "peerURLs": [peer_url], "isLearner": true }).to_string();
    let out = from
        .run(&call("/v3/cluster/member/add", &body))
        .await
        .with_context(|| format!("adding etcd learner {peer_url}"))?;
    parse_added(&out.stdout_str())
}

/// The id of the member a gateway `MemberAddResponse` added.
pub fn parse_added(json: &str) -> anyhow::Result<u64> {
    let v: Value = serde_json::from_str(json.trim())
        .with_context(|| format!("etcd's answer to member add is not JSON: {}", json.trim()))?;
    match v.get("member").and_then(|m| m.get("ID")) {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .with_context(|| {
        format!(
            "etcd's answer to member add names no member: {}",
            json.trim()
        )
    })
}

/// Promotes learner `id` to a voter (`Cluster.MemberPromote`). etcd refuses while the learner
/// has not caught up with the leader's log. Not read-only: callers run it through the gate.
pub async fn promote(from: &NodeHandle, id: u64) -> anyhow::Result<()> {
    let body = format!("{{\"ID\":\"{id}\"}}");
    from.run(&call("/v3/cluster/member/promote", &body))
        .await
        .with_context(|| format!("promoting etcd learner {id:x}"))?;
    Ok(())
}

/// The member id the local member on `from` believes is the leader (`Maintenance.Status`).
pub async fn leader(from: &NodeHandle) -> anyhow::Result<u64> {
    let out = from
        .run(&call("/v3/maintenance/status", "{}").read_only())
        .await
        .context("asking etcd for its status")?;
    parse_leader(&out.stdout_str())
}

/// The `leader` of a gateway `StatusResponse` (a 64-bit id, as a JSON string or number).
pub fn parse_leader(json: &str) -> anyhow::Result<u64> {
    let v: Value = serde_json::from_str(json.trim())
        .with_context(|| format!("etcd's status is not JSON: {}", json.trim()))?;
    match v.get("leader") {
        Some(Value::String(s)) => s.parse().ok(),
        Some(Value::Number(n)) => n.as_u64(),
        _ => None,
    }
    .with_context(|| format!("etcd's status names no leader: {}", json.trim()))
}

/// Hands the leadership to `target` (`Maintenance.MoveLeader`); `from` must be the leader's
/// node. Removing the leader itself would make the cluster elect a new one while every API
/// server's request waits (about an election timeout); a transfer is one round trip. Not
/// read-only: callers run it through the gate as a step.
pub async fn move_leader(from: &NodeHandle, target: u64) -> anyhow::Result<()> {
    let body = format!("{{\"targetID\":\"{target}\"}}");
    from.run(&call("/v3/maintenance/transfer-leadership", &body))
        .await
        .with_context(|| format!("moving the etcd leadership to {target:x}"))?;
    Ok(())
}

/// Parses the gateway's `MemberListResponse`.
pub fn parse_members(json: &str) -> anyhow::Result<Vec<Member>> {
    let v: Value = serde_json::from_str(json.trim())
        .with_context(|| format!("etcd's member list is not JSON: {}", json.trim()))?;
    let Some(list) = v.get("members").and_then(Value::as_array) else {
        bail!("etcd's answer has no member list: {}", json.trim());
    };
    let strings = |m: &Value, key: &str| -> Vec<String> {
        m.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    list.iter()
        .map(|m| {
            let id = match m.get("ID") {
                Some(Value::String(s)) => s.parse().ok(),
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            }
            .with_context(|| format!("an etcd member without an ID: {m}"))?;
            Ok(Member {
                id,
                name: m
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                peer_urls: strings(m, "peerURLs"),
                client_urls: strings(m, "clientURLs"),
                is_learner: m.get("isLearner").and_then(Value::as_bool).unwrap_or(false),
                healthy: None,
            })
        })
        .collect()
}

/// The votes a cluster of `voters` members needs to make progress.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Why adding one member now would be unsafe, if it would. A join first adds a learner
/// (which does not vote) and then promotes it, so with every voter healthy the cluster keeps
/// its quorum at every step; what makes a join unsafe is a member that does not answer
/// (promotion raises the quorum while a vote is missing) or a learner already there (etcd
/// allows one at a time: it is a join that did not finish).
pub fn join_refusal(members: &[Member]) -> Option<String> {
    let down: Vec<String> = members
        .iter()
        .filter(|m| m.healthy != Some(true))
        .map(describe)
        .collect();
    if !down.is_empty() {
        let voters = members.iter().filter(|m| !m.is_learner).count();
        return Some(format!(
            "etcd member(s) not healthy: {}; with one more voter etcd needs {} of {} votes. \
             Bring them back first, or remove the ones that are gone for good \
             (`khactl remove-node --unreachable`)",
            down.join(", "),
            quorum(voters + 1),
            voters + 1
        ));
    }
    members.iter().find(|m| m.is_learner).map(|l| {
        format!(
            "etcd already has a learner ({}): etcd allows one at a time; it is a join that did \
             not finish",
            describe(l)
        )
    })
}

fn describe(m: &Member) -> String {
    let name = if m.name.is_empty() {
        "(unstarted)"
    } else {
        m.name.as_str()
    };
    let url = m.peer_urls.first().map(String::as_str).unwrap_or("?");
    format!("{name} {url}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_added_members_id_is_read_from_the_gateways_answer() {
        let answer = r#"{"header":{"cluster_id":"1"},"member":{"ID":"10276657743932975437","peerURLs":["https://10.0.0.24:2380"],"isLearner":true},"members":[]}"#;
        assert_eq!(parse_added(answer).unwrap(), 10276657743932975437);
        assert!(parse_added(r#"{"header":{}}"#).is_err());
    }

    #[test]
    fn the_leader_is_read_from_a_status_answer_as_string_or_number() {
        let status = r#"{"header":{"member_id":"1"},"version":"3.4.23","leader":"10276657743932975437","raftTerm":"2"}"#;
        assert_eq!(parse_leader(status).unwrap(), 10276657743932975437);
        assert_eq!(parse_leader(r#"{"leader":7}"#).unwrap(), 7);
        assert!(parse_leader(r#"{"header":{}}"#).is_err());
    }

    const LIST: &str = r#"{"header":{"cluster_id":"1","member_id":"2","raft_term":"3"},
      "members":[{"ID":"10276657743932975437","name":"cp1","peerURLs":["https://10.0.0.11:2380"],
                  "clientURLs":["https://10.0.0.11:2379"]},
                 {"ID":"2","peerURLs":["https://10.0.0.12:2380"],"isLearner":true}]}"#;

    #[test]
    fn reads_the_gateways_member_list_with_string_ids_and_learners() {
        let m = parse_members(LIST).unwrap();
        assert_eq!(m[0].id, 10_276_657_743_932_975_437);
        assert_eq!(m[0].name, "cp1");
        assert!(!m[0].is_learner && m[1].is_learner);
        assert_eq!(m[1].name, "");
        assert!(m[1].is_node("cp2", "10.0.0.12"), "by peer URL");
        assert!(m[0].is_node("cp1", "10.9.9.9"), "by name");
        assert!(!m[0].is_node("cp2", "10.0.0.12"));
    }

    fn member(name: &str, healthy: bool, learner: bool) -> Member {
        Member {
            id: 1,
            name: name.into(),
            peer_urls: vec![format!("https://{name}:2380")],
            client_urls: vec![],
            is_learner: learner,
            healthy: Some(healthy),
        }
    }

    #[test]
    fn a_join_is_refused_with_a_member_down_or_a_learner_pending() {
        assert_eq!(join_refusal(&[member("cp1", true, false)]), None);
        let three = [
            member("cp1", true, false),
            member("cp2", true, false),
            member("cp3", false, false),
        ];
        let why = join_refusal(&three).unwrap();
        assert!(why.contains("cp3"), "{why}");
        let learner = [member("cp1", true, false), member("cp2", true, true)];
        assert!(join_refusal(&learner).unwrap().contains("learner"));
    }

    #[test]
    fn reads_a_members_status_with_string_numbers() {
        let s = parse_status(
            r#"{"header":{"cluster_id":"1","member_id":"10276657743932975437","revision":"9"},
               "version":"3.4.23","dbSize":"20480","leader":"2","raftIndex":"12"}"#,
        )
        .unwrap();
        assert_eq!(s.member_id, 10_276_657_743_932_975_437);
        assert_eq!((s.leader, s.db_size), (2, 20480));
        assert_eq!(s.version, "3.4.23");
        assert_eq!(parse_status("-"), None);
        assert_eq!(parse_status(r#"{"error":"x"}"#), None);
    }

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(
            (quorum(1), quorum(2), quorum(3), quorum(4), quorum(5)),
            (1, 2, 2, 3, 3)
        );
    }
}
