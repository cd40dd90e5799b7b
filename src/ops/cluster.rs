//! Running on a cluster: every instance records, with each heartbeat, the
//! Galera node it writes through in the `instances` table, and counts the
//! distinct writer nodes of the live instances. More than one is the
//! multi-writer topology, which Galera cannot keep exact on a hot row (see
//! docs/scaling.md, "Scaling out"): `Watch` turns the counts into one alert when it
//! starts and one note when it ends. Off Galera there is nothing to count.

use std::time::Duration;

use mysql::prelude::Queryable;

use crate::db::{DbError, Pool};

/// This process, as the `instances` table knows it.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Instance {
    /// A new random id for this process.
    pub fn this_process() -> Instance {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        Instance {
            id: crate::auth::token::hex(&bytes),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id(),
        }
    }
}

/// The Galera node this connection writes through, or `None` off Galera
/// (also on MySQL, which has no such variables).
fn writer_node(conn: &mut impl Queryable) -> Result<Option<String>, DbError> {
    let vars: Vec<(String, String)> =
        conn.query("SHOW VARIABLES WHERE Variable_name IN ('wsrep_on', 'wsrep_node_name')")?;
    let get = |name: &str| {
        vars.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let on = get("wsrep_on").is_some_and(|v| v.eq_ignore_ascii_case("on"));
    Ok(if on { get("wsrep_node_name") } else { None })
}

/// What one heartbeat saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// Distinct writer nodes of the live instances; `None` off Galera.
    pub writer_nodes: Option<u64>,
    /// This instance has the smallest id among the live ones: it is the one
    /// that mails, so the alert list gets one mail, not one per instance.
    pub mails: bool,
}

/// Records this instance as live and counts the distinct writer nodes
/// among the instances seen within `live_within`.
pub fn beat(pool: &Pool, me: &Instance, live_within: Duration) -> Result<Beat, DbError> {
    let mut conn = pool.get()?;
    let node = writer_node(&mut **conn)?;
    conn.exec_drop(
        "REPLACE INTO instances (id, host, pid, node, seen_at) VALUES (?, ?, ?, ?, NOW(3))",
        (&me.id, &me.host, me.pid, &node),
    )?;
    if node.is_none() {
        return Ok(Beat {
            writer_nodes: None,
            mails: false,
        });
    }
    let row: Option<(u64, Option<String>)> = conn.exec_first(
        "SELECT COUNT(DISTINCT node), MIN(id) FROM instances \
         WHERE node IS NOT NULL AND seen_at > NOW(3) - INTERVAL ? MICROSECOND",
        (live_within.as_micros() as u64,),
    )?;
    let (nodes, first) = row.unwrap_or((1, None));
    Ok(Beat {
        writer_nodes: Some(nodes),
        mails: first.as_deref() == Some(me.id.as_str()),
    })
}

/// Removes this instance's row at a clean stop, and rows of instances not
/// seen for a day.
pub fn leave(pool: &Pool, me: &Instance) -> Result<(), DbError> {
    let mut conn = pool.get()?;
    conn.exec_drop("DELETE FROM instances WHERE id = ?", (&me.id,))?;
    conn.query_drop("DELETE FROM instances WHERE seen_at < NOW(3) - INTERVAL 1 DAY")?;
    Ok(())
}

/// What a change in the writer-node count calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Live instances now write through this many nodes (> 1).
    MultiWriter(u64),
    /// Back to one writer node.
    SingleWriter,
}

/// Remembers whether multi-writer was already reported, so that an outage
/// gives one alert, not one per heartbeat. It takes two beats in a row that
/// see more than one node: during a failover through HAProxy the first beat
/// through the new node still sees the others' rows naming the old one,
/// until they have beaten once too — which they have by the next beat.
#[derive(Debug, Default)]
pub struct Watch {
    alerted: bool,
    seen_once: bool,
}

impl Watch {
    pub fn observe(&mut self, writer_nodes: Option<u64>) -> Option<Change> {
        let many = writer_nodes.is_some_and(|n| n > 1);
        let confirmed = many && self.seen_once;
        self.seen_once = many;
        match writer_nodes {
            Some(n) if confirmed && !self.alerted => {
                self.alerted = true;
                Some(Change::MultiWriter(n))
            }
            Some(n) if n <= 1 && self.alerted => {
                self.alerted = false;
                Some(Change::SingleWriter)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_writer_is_reported_once_until_it_ends() {
        let mut w = Watch::default();
        assert_eq!(w.observe(Some(1)), None);
        assert_eq!(w.observe(Some(2)), None, "one beat may be a failover");
        assert_eq!(w.observe(Some(2)), Some(Change::MultiWriter(2)));
        assert_eq!(w.observe(Some(3)), None);
        assert_eq!(w.observe(Some(2)), None);
        assert_eq!(w.observe(Some(1)), Some(Change::SingleWriter));
        assert_eq!(w.observe(Some(1)), None);
        assert_eq!(w.observe(None), None);
    }

    #[test]
    fn a_single_beat_with_two_nodes_is_a_failover_not_an_alert() {
        let mut w = Watch::default();
        assert_eq!(w.observe(Some(2)), None);
        assert_eq!(w.observe(Some(1)), None);
        assert_eq!(w.observe(Some(2)), None);
        assert_eq!(w.observe(Some(1)), None);
    }

    #[test]
    fn instance_ids_are_32_hex_characters_and_distinct() {
        let (a, b) = (Instance::this_process(), Instance::this_process());
        assert_eq!(a.id.len(), 32);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
    }
}
