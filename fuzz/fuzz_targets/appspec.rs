//! Parses the input as an AppSpec (`AppSpec::parse`, what `AppSpec::load`
//! runs on the file of a revision) and checks what a parsed AppSpec
//! promises: sources inside the revision, absolute normalized destinations
//! and objects, permissions that can be matched against paths.
#![no_main]

use std::path::{Component, Path};

use edgedeploy::appspec::{AppSpec, LifecycleEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // AppSpec::load refuses what is not UTF-8 before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = AppSpec::parse(text) else { return };
    for mapping in &spec.files {
        assert!(
            mapping.source.components().all(|c| matches!(c, Component::Normal(_))),
            "files source {:?} is not a normalized relative path",
            mapping.source
        );
        assert!(normalized_absolute(&mapping.destination), "files destination {:?}", mapping.destination);
    }
    for permission in &spec.permissions {
        assert!(normalized_absolute(&permission.object), "permissions object {:?}", permission.object);
        let _ = permission.check_file_object();
        for path in [permission.object.as_path(), &permission.object.join("a/b.txt"), Path::new("/etc/passwd")] {
            let _ = permission.applies_to(path, false);
            let _ = permission.applies_to(path, true);
        }
    }
    for event in LifecycleEvent::ALL {
        for script in spec.scripts(event) {
            let location = &script.location;
            assert!(
                !location.is_empty() && !location.contains('\0') && !location.split('/').any(|p| p == ".."),
                "script location {location:?} of {event} is empty or leaves the revision"
            );
        }
    }
});

/// `/` followed by plain names only.
fn normalized_absolute(path: &Path) -> bool {
    let mut components = path.components();
    components.next() == Some(Component::RootDir) && components.all(|c| matches!(c, Component::Normal(_)))
}
