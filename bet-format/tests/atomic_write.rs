//! The writer's file contract: the target holds the old bytes or the new bytes, never a mix;
//! nothing is left behind; failures are typed.

use bet_format::{Error, write_atomic};

#[test]
fn replaces_the_file_and_leaves_nothing_behind() {
    let dir = std::env::temp_dir().join(format!("bet-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.bet");
    write_atomic(&path, b"first version").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"first version");
    let big = vec![7u8; 1 << 20];
    write_atomic(&path, &big).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), big);
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.bet")], "temporary files left behind");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_directory_is_a_typed_error() {
    let path = std::path::Path::new("/nonexistent-bet-dir/x/model.bet");
    assert_eq!(write_atomic(path, b"x"), Err(Error::Io(std::io::ErrorKind::NotFound)));
}
