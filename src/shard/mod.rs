//! PURE: the shard map (DESIGN §4), weighted rendezvous ownership and movement plans. No I/O.
