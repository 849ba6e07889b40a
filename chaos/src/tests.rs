//! Unit tests of `main`.

use super::*;

#[test]
fn run_ids_are_short_alphanumerics() {
    assert_eq!(parse_run_id("ci1").unwrap(), "ci1");
    for bad in ["", "a-b", "../x", "12345678901234567"] {
        assert!(parse_run_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn the_partition_mode_follows_the_flag_the_probe_and_attaching() {
    let ok = || Ok(());
    let no = || Err("not root".to_owned());
    assert_eq!(decide_mode(PartitionArg::Auto, false, ok), Ok(Ok(())));
    assert_eq!(
        decide_mode(PartitionArg::Auto, false, no),
        Ok(Err(Some("not root".into())))
    );
    assert_eq!(decide_mode(PartitionArg::Agent, false, ok), Ok(Err(None)));
    assert!(decide_mode(PartitionArg::Netns, false, no).is_err());
    assert_eq!(decide_mode(PartitionArg::Netns, false, ok), Ok(Ok(())));
    // Attached: never netns, and the probe does not even run.
    let never = || -> Result<(), String> { panic!("probed while attached") };
    assert!(matches!(
        decide_mode(PartitionArg::Auto, true, never),
        Ok(Err(Some(r))) if r.contains("--state")
    ));
    assert!(decide_mode(PartitionArg::Netns, true, || Ok(())).is_err());
}

#[test]
fn utc_dates_are_civil() {
    assert_eq!(civil(0), "1970-01-01T00:00:00Z");
    assert_eq!(civil(1_732_800_000), "2024-11-28T13:20:00Z");
    assert_eq!(civil(951_782_400), "2000-02-29T00:00:00Z");
}
