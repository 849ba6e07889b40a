//! Golden vectors: `owner()` must give exactly the owners in `tests/data/shard_golden.json`,
//! which an independent implementation of the hash computed. A failure means the hash (or the
//! rendezvous rule) changed, which would move workspaces in production: fix the code, never
//! the file.

use std::collections::BTreeMap;

use wafleet::ids::WorkspaceId;
use wafleet::shard::ShardMap;

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    map: serde_json::Value,
    owners: BTreeMap<String, u32>,
}

#[test]
fn owners_match_the_golden_vectors() {
    let raw = include_str!("../data/shard_golden.json");
    let golden: Golden = serde_json::from_str(raw).expect("golden file parses");
    assert!(golden.cases.len() >= 8);
    let mut checked = 0;
    for case in &golden.cases {
        let map = ShardMap::from_json(case.map.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(case.owners.len() >= 50, "{}", case.name);
        for (ws, &want) in &case.owners {
            let ws = WorkspaceId::new(ws.as_str()).expect("golden ids are valid");
            assert_eq!(
                map.owner(&ws),
                Some(want),
                "map {} workspace {ws}",
                case.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 500);
}

#[test]
fn golden_vectors_spread_over_shards() {
    // Guards the file itself: a degenerate table (all on one shard) would prove little.
    let golden: Golden = serde_json::from_str(include_str!("../data/shard_golden.json")).unwrap();
    let case = golden.cases.iter().find(|c| c.name == "uniform-4").unwrap();
    let mut seen: Vec<u32> = case.owners.values().copied().collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, vec![0, 1, 2, 3]);
}
