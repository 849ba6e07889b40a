//! Property tests of the shard map: minimal movement, weights, pins (DESIGN §4).
//!
//! Statistical bounds are wide (6 standard deviations), so a correct implementation fails
//! with negligible probability, while modulo hashing (which moves n/(n+1)) fails at once.

use proptest::prelude::*;
use wafleet::ids::WorkspaceId;
use wafleet::shard::{Edit, ShardMap, plan};

const N_WS: usize = 4000;

fn workspaces(seed: u64) -> Vec<WorkspaceId> {
    (0..N_WS)
        .map(|i| WorkspaceId::new(format!("ws-{seed:x}-{i}")).unwrap())
        .collect()
}

/// |observed - expected| within 6 standard deviations of a binomial proportion.
fn within(observed: usize, total: usize, p: f64) -> bool {
    let sd = (p * (1.0 - p) / total as f64).sqrt();
    let got = observed as f64 / total as f64;
    (got - p).abs() <= 6.0 * sd + 1e-9
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one(n in 1u32..24, seed in any::<u64>()) {
        let old = ShardMap::uniform(n);
        let new = old.edited(&[Edit::Count(n + 1)]).unwrap();
        let ws = workspaces(seed);
        let moves = plan(&old, &new, &ws);
        prop_assert!(within(moves.len(), ws.len(), 1.0 / f64::from(n + 1)),
            "moved {} of {} going {n} -> {}", moves.len(), ws.len(), n + 1);
        // Every move goes to the new shard: nothing reshuffles among the old ones.
        prop_assert!(moves.iter().all(|m| m.to == Some(n)));
    }

    #[test]
    fn removing_or_draining_moves_only_that_shards_workspaces(
        n in 2u32..20, victim in any::<u32>(), seed in any::<u64>(), drain in any::<bool>()
    ) {
        let victim = victim % n;
        // Removal through a map without the victim (ids need not be contiguous).
        let old = ShardMap::uniform(n);
        let new = if drain {
            old.edited(&[Edit::Drain(victim)]).unwrap()
        } else {
            let mut m = old.clone();
            m.shards.retain(|s| s.id != victim);
            m
        };
        let ws = workspaces(seed);
        let moves = plan(&old, &new, &ws);
        for m in &moves {
            prop_assert_eq!(m.from, Some(victim));
            prop_assert!(m.to.is_some() && m.to != Some(victim));
        }
        let owned = ws.iter().filter(|w| old.owner(w) == Some(victim)).count();
        prop_assert_eq!(moves.len(), owned);
    }

    #[test]
    fn weights_are_honoured_in_proportion(
        weights in prop::collection::vec(0.25f64..4.0, 2..6), seed in any::<u64>()
    ) {
        let mut map = ShardMap::uniform(weights.len() as u32);
        for (s, w) in map.shards.iter_mut().zip(&weights) {
            s.weight = *w;
        }
        map.validate().unwrap();
        let total: f64 = weights.iter().sum();
        let ws = workspaces(seed);
        let mut counts = vec![0usize; weights.len()];
        for w in &ws {
            counts[map.owner(w).unwrap() as usize] += 1;
        }
        for (i, w) in weights.iter().enumerate() {
            prop_assert!(within(counts[i], ws.len(), w / total),
                "shard {i} weight {w}/{total}: {} of {}", counts[i], ws.len());
        }
    }

    #[test]
    fn pins_always_win(
        n in 1u32..16, pin_to in any::<u32>(), drained in any::<bool>(), name in "[a-z0-9_-]{1,20}"
    ) {
        let pin_to = pin_to % n;
        let ws = WorkspaceId::new(name).unwrap();
        let mut edits = vec![Edit::Pin(ws.clone(), pin_to)];
        if drained && n > 1 {
            edits.push(Edit::Drain(pin_to));
        }
        let map = ShardMap::uniform(n).edited(&edits).unwrap();
        prop_assert_eq!(map.owner(&ws), Some(pin_to));
    }
}

#[test]
fn modulo_would_fail_the_movement_bound() {
    // Sanity check of the bound itself: modulo's n/(n+1) is far outside it.
    assert!(!within(N_WS * 3 / 4, N_WS, 0.25));
    assert!(within(N_WS / 4, N_WS, 0.25));
}
