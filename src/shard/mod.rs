//! PURE: the shard map (DESIGN §4), weighted rendezvous ownership and movement plans.
//!
//! No I/O, no clock, no randomness: the map is data read from Consul KV (`wafleet/shardmap`)
//! by the router, the workers and `wafleet shards …`, and every one of them must compute the
//! same owner for a workspace. Reading and writing the key is the callers' business.
//!
//! `owner(ws)` is `pins[ws]` when the workspace is pinned (pins win, even over draining),
//! otherwise the highest random weight (rendezvous) over the shards that are not draining,
//! with the fixed hash of [`hash`]. Rendezvous moves only what must move: adding a shard to
//! n takes about 1/(n+1) of the workspaces (all of them to the new shard), removing or
//! draining a shard moves only that shard's workspaces.

pub mod hash;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::WorkspaceId;

/// The shard map stored as JSON at `<prefix>/shardmap`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardMap {
    /// Increases on every write (operators' CAS writes through `wafleet shards …`).
    pub version: u64,
    /// Every shard that exists, draining or not.
    pub shards: Vec<Shard>,
    /// Workspaces forced onto a shard; pins win over rendezvous and over draining.
    #[serde(default)]
    pub pins: BTreeMap<WorkspaceId, u32>,
    /// Shards that keep running but receive no workspace by rendezvous.
    #[serde(default)]
    pub draining: Vec<u32>,
}

/// One shard: its id (the worker's `--shard K`) and its relative capacity.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    /// The shard id, `K` in `shard-K`.
    pub id: u32,
    /// Relative capacity: a shard of weight 2 gets about twice the workspaces of weight 1.
    #[serde(default = "default_weight")]
    pub weight: f64,
}

fn default_weight() -> f64 {
    1.0
}

/// Why a map was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    /// The bytes are not a shard map in JSON.
    #[error("shard map is not valid JSON: {0}")]
    Json(String),
    /// The map has no shard at all.
    #[error("shard map has no shards")]
    NoShards,
    /// Two shards share an id.
    #[error("shard {0} appears more than once")]
    DuplicateShard(u32),
    /// A weight is zero, negative, NaN or infinite.
    #[error("shard {shard} has weight {weight}; weights must be finite and > 0")]
    BadWeight {
        /// The shard.
        shard: u32,
        /// Its weight.
        weight: f64,
    },
    /// A pin names a shard that does not exist.
    #[error("workspace {workspace} is pinned to shard {shard}, which does not exist")]
    PinToUnknownShard {
        /// The pinned workspace.
        workspace: WorkspaceId,
        /// The missing shard.
        shard: u32,
    },
    /// The draining list names a shard that does not exist.
    #[error("draining shard {0} does not exist")]
    DrainingUnknownShard(u32),
    /// Every shard is draining, so unpinned workspaces would have no owner.
    #[error("every shard is draining; at least one must take workspaces")]
    AllDraining,
    /// An edit names a shard that does not exist.
    #[error("shard {0} does not exist")]
    UnknownShard(u32),
}

/// One change an operator asks for (`wafleet shards apply …`, `pin`, `unpin`).
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Make the shard ids exactly `0..n`: keep existing ones below n (with their weights),
    /// add missing ones with weight 1, remove those ≥ n (and their pins and drain marks).
    Count(u32),
    /// Stop giving the shard workspaces by rendezvous.
    Drain(u32),
    /// Undo [`Edit::Drain`].
    Undrain(u32),
    /// Set a shard's weight.
    Weight(u32, f64),
    /// Pin a workspace to a shard.
    Pin(WorkspaceId, u32),
    /// Remove a workspace's pin (no-op when it has none).
    Unpin(WorkspaceId),
}

/// A workspace whose owner differs between two maps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// Its owner under the old map (`None` only for a map with no usable shard).
    pub from: Option<u32>,
    /// Its owner under the new map.
    pub to: Option<u32>,
}

// === impl ShardMap ===

impl ShardMap {
    /// `count` shards `0..count` of weight 1, version 1, no pins, none draining.
    pub fn uniform(count: u32) -> ShardMap {
        ShardMap {
            version: 1,
            shards: (0..count).map(|id| Shard { id, weight: 1.0 }).collect(),
            pins: BTreeMap::new(),
            draining: Vec::new(),
        }
    }

    /// Parses JSON and validates it: a map that fails validation is never returned.
    pub fn from_json(bytes: &[u8]) -> Result<ShardMap, MapError> {
        let map: ShardMap =
            serde_json::from_slice(bytes).map_err(|e| MapError::Json(e.to_string()))?;
        map.validate()?;
        Ok(map)
    }

    /// The map as compact JSON (the form stored in Consul).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of numbers, strings and maps with string keys cannot fail;
        // non-finite weights (refused by validate) would serialise as null rather than fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Checks the invariants: at least one shard, unique ids, finite weights > 0, pins and
    /// drain marks naming existing shards, at least one shard not draining.
    pub fn validate(&self) -> Result<(), MapError> {
        if self.shards.is_empty() {
            return Err(MapError::NoShards);
        }
        for (i, s) in self.shards.iter().enumerate() {
            if self.shards[..i].iter().any(|o| o.id == s.id) {
                return Err(MapError::DuplicateShard(s.id));
            }
            if !(s.weight.is_finite() && s.weight > 0.0) {
                return Err(MapError::BadWeight {
                    shard: s.id,
                    weight: s.weight,
                });
            }
        }
        for (ws, &shard) in &self.pins {
            if !self.has_shard(shard) {
                return Err(MapError::PinToUnknownShard {
                    workspace: ws.clone(),
                    shard,
                });
            }
        }
        for &d in &self.draining {
            if !self.has_shard(d) {
                return Err(MapError::DrainingUnknownShard(d));
            }
        }
        if self.shards.iter().all(|s| self.is_draining(s.id)) {
            return Err(MapError::AllDraining);
        }
        Ok(())
    }

    /// Whether a shard with this id exists (draining or not).
    pub fn has_shard(&self, id: u32) -> bool {
        self.shards.iter().any(|s| s.id == id)
    }

    /// Whether the shard is marked draining.
    pub fn is_draining(&self, id: u32) -> bool {
        self.draining.contains(&id)
    }

    /// The ids of every shard, in map order.
    pub fn shard_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.shards.iter().map(|s| s.id)
    }

    /// The shard that owns `ws`: its pin, else weighted rendezvous over non-draining shards.
    /// `None` only when no shard can take it (an invalid map). O(shards), no allocation.
    pub fn owner(&self, ws: &WorkspaceId) -> Option<u32> {
        if let Some(&pinned) = self.pins.get(ws) {
            return Some(pinned);
        }
        self.rendezvous(hash::workspace_hash(ws.as_str()))
    }

    /// Rendezvous over the non-draining shards for a precomputed workspace hash.
    fn rendezvous(&self, wsh: u64) -> Option<u32> {
        let mut candidates = self.shards.iter().filter(|s| !self.is_draining(s.id));
        let first = candidates.next()?;
        // Equal weights: -w/ln(u) grows with u, so comparing the hashes' top 52 bits picks the
        // same winner as comparing scores, without a logarithm per shard. Ties (in either
        // form) go to the lower id, so both paths agree exactly.
        let uniform = self
            .shards
            .iter()
            .all(|s| s.weight.to_bits() == first.weight.to_bits());
        let mut best = first.id;
        if uniform {
            let mut best_key = hash::pair_hash(wsh, first.id) >> hash::UNIT_SHIFT;
            for s in candidates {
                let key = hash::pair_hash(wsh, s.id) >> hash::UNIT_SHIFT;
                if key > best_key || (key == best_key && s.id < best) {
                    best = s.id;
                    best_key = key;
                }
            }
        } else {
            let mut best_score = hash::score(wsh, first.id, first.weight);
            for s in candidates {
                let sc = hash::score(wsh, s.id, s.weight);
                if sc > best_score || (sc == best_score && s.id < best) {
                    best = s.id;
                    best_score = sc;
                }
            }
        }
        Some(best)
    }

    /// A copy with the edits applied, `version` increased by one, and validated.
    pub fn edited(&self, edits: &[Edit]) -> Result<ShardMap, MapError> {
        let mut m = self.clone();
        for e in edits {
            match e {
                Edit::Count(n) => {
                    m.shards.retain(|s| s.id < *n);
                    for id in 0..*n {
                        if !m.has_shard(id) {
                            m.shards.push(Shard { id, weight: 1.0 });
                        }
                    }
                    m.shards.sort_by_key(|s| s.id);
                    m.pins.retain(|_, k| *k < *n);
                    m.draining.retain(|k| *k < *n);
                }
                Edit::Drain(k) => {
                    if !m.has_shard(*k) {
                        return Err(MapError::UnknownShard(*k));
                    }
                    if !m.draining.contains(k) {
                        m.draining.push(*k);
                        m.draining.sort_unstable();
                    }
                }
                Edit::Undrain(k) => {
                    if !m.has_shard(*k) {
                        return Err(MapError::UnknownShard(*k));
                    }
                    m.draining.retain(|d| d != k);
                }
                Edit::Weight(k, w) => match m.shards.iter_mut().find(|s| s.id == *k) {
                    Some(s) => s.weight = *w,
                    None => return Err(MapError::UnknownShard(*k)),
                },
                Edit::Pin(ws, k) => {
                    if !m.has_shard(*k) {
                        return Err(MapError::UnknownShard(*k));
                    }
                    m.pins.insert(ws.clone(), *k);
                }
                Edit::Unpin(ws) => {
                    m.pins.remove(ws);
                }
            }
        }
        m.version = self.version.saturating_add(1);
        m.validate()?;
        Ok(m)
    }
}

/// Every workspace of `workspaces` whose owner differs between `old` and `new`, in input order.
pub fn plan(old: &ShardMap, new: &ShardMap, workspaces: &[WorkspaceId]) -> Vec<Move> {
    workspaces
        .iter()
        .filter_map(|ws| {
            let from = old.owner(ws);
            let to = new.owner(ws);
            (from != to).then(|| Move {
                workspace: ws.clone(),
                from,
                to,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(s: &str) -> WorkspaceId {
        WorkspaceId::new(s).unwrap()
    }

    #[test]
    fn parses_the_design_example() {
        let m = ShardMap::from_json(
            br#"{"version": 7, "shards": [{"id": 0, "weight": 1.0}, {"id": 1, "weight": 1.0}],
                 "pins": {"acme-42": 1}, "draining": []}"#,
        )
        .unwrap();
        assert_eq!(m.version, 7);
        assert_eq!(m.owner(&ws("acme-42")), Some(1));
        assert_eq!(ShardMap::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn refuses_invalid_maps() {
        type Check = fn(&MapError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{", |e| matches!(e, MapError::Json(_))),
            (r#"{"version":1,"shards":[]}"#, |e| *e == MapError::NoShards),
            (r#"{"version":1,"shards":[{"id":1},{"id":1}]}"#, |e| {
                *e == MapError::DuplicateShard(1)
            }),
            (r#"{"version":1,"shards":[{"id":1,"weight":0}]}"#, |e| {
                matches!(e, MapError::BadWeight { shard: 1, .. })
            }),
            (r#"{"version":1,"shards":[{"id":1,"weight":-2}]}"#, |e| {
                matches!(e, MapError::BadWeight { .. })
            }),
            (r#"{"version":1,"shards":[{"id":1}],"pins":{"a":2}}"#, |e| {
                matches!(e, MapError::PinToUnknownShard { shard: 2, .. })
            }),
            (
                r#"{"version":1,"shards":[{"id":1}],"pins":{"a/b":1}}"#,
                |e| matches!(e, MapError::Json(_)),
            ),
            (r#"{"version":1,"shards":[{"id":1}],"draining":[3]}"#, |e| {
                *e == MapError::DrainingUnknownShard(3)
            }),
            (r#"{"version":1,"shards":[{"id":1}],"draining":[1]}"#, |e| {
                *e == MapError::AllDraining
            }),
            (r#"{"shards":[{"id":1}]}"#, |e| {
                matches!(e, MapError::Json(_))
            }),
        ];
        for (json, ok) in cases {
            let err = ShardMap::from_json(json.as_bytes()).unwrap_err();
            assert!(ok(&err), "{json}: {err:?}");
        }
        let nan = ShardMap {
            shards: vec![Shard {
                id: 0,
                weight: f64::NAN,
            }],
            ..ShardMap::uniform(1)
        };
        assert!(matches!(nan.validate(), Err(MapError::BadWeight { .. })));
    }

    #[test]
    fn fast_path_agrees_with_scores() {
        let m = ShardMap::uniform(16);
        for i in 0..2000 {
            let w = ws(&format!("ws-{i}"));
            let wsh = hash::workspace_hash(w.as_str());
            let by_score = m
                .shards
                .iter()
                .map(|s| (hash::score(wsh, s.id, 1.0), s.id))
                .fold((f64::MIN, u32::MAX), |a, b| if b.0 > a.0 { b } else { a })
                .1;
            assert_eq!(m.owner(&w), Some(by_score));
        }
    }

    #[test]
    fn edits_bump_version_and_validate() {
        let m = ShardMap::uniform(3);
        let e = m
            .edited(&[
                Edit::Count(4),
                Edit::Drain(1),
                Edit::Weight(2, 2.5),
                Edit::Pin(ws("acme"), 3),
            ])
            .unwrap();
        assert_eq!(e.version, 2);
        assert_eq!(e.shard_ids().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!(e.draining, vec![1]);
        assert_eq!(e.shards[2].weight, 2.5);
        assert_eq!(e.owner(&ws("acme")), Some(3));
        let shrunk = e.edited(&[Edit::Count(2), Edit::Unpin(ws("x"))]).unwrap();
        assert!(shrunk.pins.is_empty() && shrunk.draining == vec![1]);
        assert_eq!(shrunk.version, 3);
        assert_eq!(m.edited(&[Edit::Drain(9)]), Err(MapError::UnknownShard(9)));
        assert_eq!(
            ShardMap::uniform(1).edited(&[Edit::Drain(0)]),
            Err(MapError::AllDraining)
        );
        assert!(matches!(
            m.edited(&[Edit::Weight(0, f64::INFINITY)]),
            Err(MapError::BadWeight { .. })
        ));
        assert_eq!(m.edited(&[Edit::Count(0)]), Err(MapError::NoShards));
    }

    #[test]
    fn plan_lists_only_moves() {
        let old = ShardMap::uniform(3);
        let new = old.edited(&[Edit::Count(4)]).unwrap();
        let all: Vec<_> = (0..500).map(|i| ws(&format!("w{i}"))).collect();
        let moves = plan(&old, &new, &all);
        assert!(!moves.is_empty() && moves.len() < 250);
        for m in &moves {
            assert_eq!(m.to, Some(3));
            assert_eq!(m.from, old.owner(&m.workspace));
        }
        assert!(plan(&old, &old, &all).is_empty());
    }
}
