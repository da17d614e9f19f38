//! Redis I/O for cluster entitlements: one connection, one Lua script, one pipelined round trip
//! per sync. Nothing here keeps state between syncs except the connection itself, so a lost
//! connection (or a Redis that restarted empty) is recovered by the next sync alone.
use std::time::Duration;

use redis::{Client, Connection, ErrorKind, RedisResult, Script, ServerErrorKind};

use super::Share;

/// Atomic per (entitlement, window): this node's absolute usage goes into its own field of the
/// window's hash, the key expires after the window (plus a margin), and the reply is every
/// node's value. The sum is done by the caller in u128: Lua numbers are doubles, exact only up
/// to 2^53 (a cost limit in pico-USD passes that at about 9,000 USD).
const SYNC_LUA: &str = r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return redis.call('HVALS', KEYS[1])
"#;

/// A key outlives its window by this much: nodes whose clocks differ by less still meet in
/// the same hash, and a late sync of the window's last calls still lands.
pub const EXPIRY_MARGIN_MS: i64 = 10 * 60 * 1000;

pub struct Store {
    client: Client,
    conn: Option<Connection>,
    script: Script,
    timeout: Duration,
    node: String,
    key_prefix: String,
}

/// What one sync learned: each share's cluster total (in the order given; `None` where that
/// key's reply was unusable) and the number of Redis commands it took.
pub struct SyncReply {
    pub totals: Vec<Option<u128>>,
    pub commands: u64,
    /// A reply that did not parse (a foreign value in a field): reported, not fatal.
    pub bad_reply: Option<String>,
}

impl Store {
    /// Parses the URL only; connecting is the worker's job (with timeouts and backoff).
    pub fn new(url: &str, node: &str, key_prefix: &str, timeout: Duration) -> RedisResult<Store> {
        Ok(Store {
            client: Client::open(url)?,
            conn: None,
            script: Script::new(SYNC_LUA),
            timeout,
            node: node.to_string(),
            key_prefix: key_prefix.to_string(),
        })
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Forgets the connection after an error: the next sync reconnects.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    pub fn key(&self, share: &Share) -> String {
        window_key(&self.key_prefix, &share.entitlement, share.window_start)
    }

    fn connection(&mut self) -> RedisResult<&mut Connection> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(self.timeout)?;
            conn.set_read_timeout(Some(self.timeout))?;
            conn.set_write_timeout(Some(self.timeout))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("just set"))
    }

    /// Writes every share and reads back every cluster total in one round trip (EVALSHA; a
    /// Redis that does not know the script, after a restart or SCRIPT FLUSH, gets one retry
    /// with the script's text, EVAL, which also caches it again). No shares: a PING, so that
    /// health stays known while no cluster entitlement has a window open.
    pub fn sync(&mut self, shares: &[Share]) -> RedisResult<SyncReply> {
        if shares.is_empty() {
            let conn = self.connection()?;
            redis::cmd("PING").query::<String>(conn)?;
            return Ok(SyncReply { totals: Vec::new(), commands: 1, bad_reply: None });
        }
        let replies = self.run(shares, false)?;
        let mut commands = shares.len() as u64;
        let replies = if replies.iter().any(|r| matches!(r, Err(e) if is_noscript(e))) {
            commands += shares.len() as u64;
            self.run(shares, true)?
        } else {
            replies
        };
        let mut bad_reply = None;
        let mut totals = Vec::with_capacity(shares.len());
        for reply in replies {
            match reply {
                Ok(values) => match sum(&values) {
                    Some(total) => totals.push(Some(total)),
                    None => {
                        bad_reply = Some("a node's field is not an unsigned integer".to_string());
                        totals.push(None);
                    }
                },
                // A server error on one key (e.g. WRONGTYPE: the key is someone else's) fails
                // that key only.
                Err(e) => {
                    bad_reply = Some(e.to_string());
                    totals.push(None);
                }
            }
        }
        Ok(SyncReply { totals, commands, bad_reply })
    }

    fn run(&mut self, shares: &[Share], eval: bool) -> RedisResult<Vec<RedisResult<Vec<String>>>> {
        let mut pipe = redis::pipe();
        for share in shares {
            let key = self.key(share);
            let expire_at_ms = share.window_end.saturating_mul(1000).saturating_add(EXPIRY_MARGIN_MS);
            let cmd =
                if eval { pipe.cmd("EVAL").arg(SYNC_LUA) } else { pipe.cmd("EVALSHA").arg(self.script.get_hash()) };
            cmd.arg(1).arg(key).arg(&self.node).arg(share.value.to_string()).arg(expire_at_ms);
        }
        pipe.ignore_errors();
        let conn = self.connection()?;
        pipe.query(conn)
    }
}

/// `<prefix><entitlement>:<window start, unix seconds>`; a prefix that does not end in `:`
/// gets one, so `tokentap` and `tokentap:` name the same keys.
pub fn window_key(prefix: &str, entitlement: &str, window_start: i64) -> String {
    let sep = if prefix.is_empty() || prefix.ends_with(':') { "" } else { ":" };
    format!("{prefix}{sep}{entitlement}:{window_start}")
}

fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// The exact sum of the nodes' values; `None` if one is not an unsigned integer.
fn sum(values: &[String]) -> Option<u128> {
    values.iter().try_fold(0u128, |acc, v| acc.checked_add(v.parse::<u128>().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_sums() {
        assert_eq!(window_key("tokentap:", "blue-daily", 1_700_000_000), "tokentap:blue-daily:1700000000");
        assert_eq!(window_key("tokentap", "blue", 60), "tokentap:blue:60");
        assert_eq!(window_key("", "blue", 60), "blue:60");
        // Beyond 2^53 (where Lua's doubles stop being exact) and beyond u64.
        let big = (1u128 << 70).to_string();
        assert_eq!(sum(&[big.clone(), "1".into()]), Some((1u128 << 70) + 1));
        assert_eq!(sum(&["9007199254740993".into(), "0".into()]), Some(9_007_199_254_740_993));
        assert_eq!(sum(&["12".into(), "x".into()]), None);
        assert_eq!(sum(&["-1".into()]), None);
        assert_eq!(sum(&[]), Some(0));
    }
}
