//! `wafleet dev`: the one-machine fleet supervisor (DESIGN §10). It plays Nomad's part on a
//! laptop: starts the built-in Consul agent, the simulator, the router and N workers as child
//! processes of this same binary, waits for each one's readiness line, restarts a child that
//! dies, initialises the shard map, and records pids and ports in `<data>/dev/state.json`.
//!
//! It is not a production supervisor: children are plain processes sharing one data
//! directory, their logs go to `<data>/dev/logs/<name>.log`, and if `wafleet dev` itself is
//! killed with SIGKILL its children are left running (they are stopped cleanly on Ctrl-C,
//! SIGINT or SIGTERM).
//!
//! * [`state`]: PURE. The `state.json` document and the restart back-off.
//! * [`supervisor`]: one task per child: spawn, readiness, restart, stop.
//! * [`netns`]: PURE. `--worker-netns`: one worker inside a network namespace.
//! * [`cli`]: flags and the start-up sequence.

pub mod cli;
pub mod netns;
pub mod state;
pub mod supervisor;
