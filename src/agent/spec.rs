//! The deployment specification on the agent's side: decoding the
//! GetDeploymentSpecification answer, the durable cache
//! (`<root>/.edgedeploy/specs/<deployment>.json`, so an interrupted event
//! can be executed again without the service), and the engine's
//! [`Deployment`] built from it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::engine::{Deployment, Revision};
use crate::fetch;
use crate::journal;
use crate::local;
use crate::logger::untrusted;
use crate::protocol::command::{FORMAT_PKCS7_JSON, FORMAT_TEXT_JSON, GetDeploymentSpecificationOutput};
use crate::protocol::spec::{DeploymentSpec, S3Revision};
use crate::state;
use crate::unpack::BundleType;

/// Specifications kept in the cache.
const CACHE_KEEP: usize = 20;

/// Decodes the answer into the specification and its JSON text.
pub fn decode(output: GetDeploymentSpecificationOutput) -> Result<(DeploymentSpec, String), String> {
    let envelope = output
        .deployment_specification
        .and_then(|s| s.generic_envelope)
        .ok_or("the service sent no deployment specification (GenericEnvelope is missing)")?;
    match envelope.format.as_str() {
        FORMAT_TEXT_JSON => {}
        FORMAT_PKCS7_JSON => {
            return Err("the deployment specification is signed (PKCS7/JSON): signed specifications are not \
                        supported by this build"
                .into());
        }
        other => {
            return Err(format!(
                "unknown envelope: deployment specification format \"{}\" is not supported",
                untrusted(other)
            ));
        }
    }
    let spec: DeploymentSpec = serde_json::from_str(&envelope.payload)
        .map_err(|e| format!("the deployment specification does not parse: {}", untrusted(&e.to_string())))?;
    state::check_folder_name("DeploymentId", &spec.deployment_id).map_err(|e| untrusted(&e))?;
    state::check_folder_name("DeploymentGroupId", &spec.deployment_group_id).map_err(|e| untrusted(&e))?;
    Ok((spec, envelope.payload))
}

/// The engine's view of the deployment.
pub fn to_deployment(spec: &DeploymentSpec) -> Result<Deployment, String> {
    state::check_folder_name("DeploymentId", &spec.deployment_id)?;
    state::check_folder_name("DeploymentGroupId", &spec.deployment_group_id)?;
    let file_exists_behavior = spec
        .file_exists_behavior()
        .map(|b| {
            local::parse_behavior(b)
                .ok_or_else(|| format!("FileExistsBehavior {b:?} is not DISALLOW, OVERWRITE or RETAIN"))
        })
        .transpose()?;
    Ok(Deployment {
        deployment_id: spec.deployment_id.clone(),
        group_id: spec.deployment_group_id.clone(),
        group_name: spec.deployment_group_name.clone(),
        application: spec.application_name.clone(),
        revision: revision(spec)?,
        appspec_filename: spec.app_spec_filename.clone(),
        file_exists_behavior,
    })
}

fn revision(spec: &DeploymentSpec) -> Result<Revision, String> {
    let r = &spec.revision;
    match r.revision_type.as_str() {
        "S3" => {
            let s3 = r.s3_revision.as_ref().ok_or("RevisionType is S3 but S3Revision is missing")?;
            let (object, bundle_type) = store_object("S3Revision", s3)?;
            Ok(Revision::S3 { object, bundle_type })
        }
        "GitHub" => {
            let gh = r.github_revision.as_ref().ok_or("RevisionType is GitHub but GitHubRevision is missing")?;
            let repository =
                if gh.account.is_empty() { gh.repository.clone() } else { format!("{}/{}", gh.account, gh.repository) };
            let archive = gh.archive.as_ref().map(|a| store_object("GitHubRevision.Archive", a)).transpose()?;
            Ok(Revision::GitHub { repository, commit_id: gh.commit_id.clone(), archive })
        }
        "URL" => {
            let u = r.url_revision.as_ref().ok_or("RevisionType is URL but UrlRevision is missing")?;
            let bundle_type = bundle_type(&u.bundle_type)?;
            if !(u.url.starts_with("http://") || u.url.starts_with("https://")) {
                return Err(format!("UrlRevision.Url {:?} is not an http:// or https:// URL", u.url));
            }
            if u.sha256.len() != 64 || !u.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("UrlRevision.Sha256 {:?} is not a SHA-256 (64 hexadecimal digits)", u.sha256));
            }
            let object = fetch::Object {
                location: fetch::Location::Url(u.url.clone()),
                etag: None,
                sha256: Some(u.sha256.to_ascii_lowercase()),
            };
            Ok(Revision::Url { object, bundle_type })
        }
        other => Err(format!(
            "RevisionType \"{}\" is not supported by this agent (S3, GitHub and URL are)",
            untrusted(other)
        )),
    }
}

/// A bundle type of a specification: tar, tgz or zip.
fn bundle_type(name: &str) -> Result<BundleType, String> {
    BundleType::from_name(name)
        .filter(|t| *t != BundleType::Directory)
        .ok_or_else(|| format!("BundleType {name:?} is not tar, tgz or zip"))
}

/// The bundle store object an `S3Revision`-shaped field names.
fn store_object(what: &str, s3: &S3Revision) -> Result<(fetch::Object, BundleType), String> {
    let bundle_type = bundle_type(&s3.bundle_type)?;
    if s3.bucket.is_empty() || s3.key.is_empty() {
        return Err(format!("{what} needs a Bucket and a Key"));
    }
    let object = fetch::Object {
        location: fetch::Location::Store {
            bucket: s3.bucket.clone(),
            key: s3.key.clone(),
            version: s3.version.clone(),
        },
        etag: s3.etag.clone(),
        sha256: s3.sha256.clone(),
    };
    Ok((object, bundle_type))
}

/// Whether the deployment is over once `event` succeeded: the last of its
/// lifecycle events when the specification lists them, else ValidateService
/// or AfterAllowTraffic.
pub fn is_last_event(spec: Option<&DeploymentSpec>, event: &str) -> bool {
    let listed = spec.map(|s| s.all_possible_lifecycle_events.as_slice()).unwrap_or_default();
    let order = |name: &str| crate::appspec::LifecycleEvent::ALL.iter().position(|e| e.name() == name);
    match listed.iter().filter_map(|n| order(n)).max() {
        Some(last) => order(event) == Some(last),
        None => matches!(event, "ValidateService" | "AfterAllowTraffic"),
    }
}

/// The specification cache.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache under the agent's private directory.
    pub fn new(private: &Path) -> Cache {
        Cache { dir: private.join("specs") }
    }

    /// Creates its directory.
    pub fn create(&self) -> io::Result<()> {
        journal::create_dir_all_durable(&self.dir)
    }

    fn path(&self, deployment_id: &str) -> PathBuf {
        self.dir.join(format!("{deployment_id}.json"))
    }

    /// Stores the specification text of `deployment_id` durably, and
    /// forgets the oldest beyond the newest few.
    pub fn store(&self, deployment_id: &str, json: &str) -> io::Result<()> {
        let path = self.path(deployment_id);
        if journal::read_optional(&path)?.as_deref() != Some(json) {
            journal::write_atomic(&path, json.as_bytes())?;
        }
        self.prune(deployment_id);
        Ok(())
    }

    /// The cached specification of `deployment_id`.
    pub fn load(&self, deployment_id: &str) -> Option<DeploymentSpec> {
        let text = journal::read_optional(&self.path(deployment_id)).ok().flatten()?;
        serde_json::from_str(&text).ok()
    }

    fn prune(&self, current: &str) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH), e.path()))
            .collect();
        files.sort_by(|a, b| b.cmp(a));
        for (_, path) in files.into_iter().skip(CACHE_KEEP) {
            if path != self.path(current) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::appspec::FileExistsBehavior;
    use crate::protocol::command::{DeploymentSpecificationEnvelopes, Envelope};

    const SPEC: &str = r#"{"DeploymentId":"d-ABC","DeploymentGroupId":"g-1","DeploymentGroupName":"Prod",
        "ApplicationName":"shop","Revision":{"RevisionType":"S3","S3Revision":{"Bucket":"b","Key":"apps/k.tgz",
        "BundleType":"tgz","ETag":"\"abc\"","Sha256":"00ff"}},
        "AgentActionOverrides":{"AgentOverrides":{"FileExistsBehavior":"OVERWRITE"}}}"#;

    fn output(format: &str, payload: &str) -> GetDeploymentSpecificationOutput {
        GetDeploymentSpecificationOutput {
            deployment_system: Some("CodeDeploy".into()),
            deployment_specification: Some(DeploymentSpecificationEnvelopes {
                generic_envelope: Some(Envelope { format: format.into(), payload: payload.into() }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn text_json_specifications_become_deployments() {
        let (spec, raw) = decode(output("TEXT/JSON", SPEC)).unwrap();
        assert_eq!(raw, SPEC);
        let d = to_deployment(&spec).unwrap();
        assert_eq!((d.deployment_id.as_str(), d.group_id.as_str(), d.group_name.as_str()), ("d-ABC", "g-1", "Prod"));
        assert_eq!(d.file_exists_behavior, Some(FileExistsBehavior::Overwrite));
        assert_eq!(d.appspec_filename, "appspec.yml");
        let Revision::S3 { object, bundle_type } = d.revision else { panic!("not S3") };
        assert_eq!(bundle_type, BundleType::Tgz);
        assert_eq!(object.path(), "/b/apps/k.tgz");
        assert_eq!((object.etag.as_deref(), object.sha256.as_deref()), (Some("\"abc\""), Some("00ff")));
    }

    #[test]
    fn signed_and_unknown_formats_are_refused_clearly() {
        let err = decode(output("PKCS7/JSON", "MIIB...")).unwrap_err();
        assert!(err.contains("signed specifications are not supported by this build"), "{err}");
        assert!(decode(output("YAML", SPEC)).unwrap_err().contains("\"YAML\""));
        assert!(decode(GetDeploymentSpecificationOutput::default()).is_err());
        let err = decode(output("TEXT/JSON", &SPEC.replace("g-1", "../etc"))).unwrap_err();
        assert!(err.contains("DeploymentGroupId"), "{err}");
    }

    #[test]
    fn github_and_other_revisions() {
        let gh = SPEC.replace(
            r#""RevisionType":"S3""#,
            r#""RevisionType":"GitHub","GitHubRevision":{"Account":"acme","Repository":"shop","CommitId":"c0ffee"}"#,
        );
        let (spec, _) = decode(output("TEXT/JSON", &gh)).unwrap();
        let d = to_deployment(&spec).unwrap();
        assert_eq!(
            d.revision,
            Revision::GitHub { repository: "acme/shop".into(), commit_id: "c0ffee".into(), archive: None }
        );
        let env = crate::engine::hook_environment(&d);
        assert!(env.contains(&("BUNDLE_COMMIT".to_string(), "c0ffee".to_string())));
        let archived = gh.replace(
            r#""CommitId":"c0ffee"}"#,
            r#""CommitId":"c0ffee","Archive":{"Bucket":"edgedeploy-git","Key":"acme/shop/c0ffee.tgz","BundleType":"tgz","Sha256":"ab"}}"#,
        );
        let (spec, _) = decode(output("TEXT/JSON", &archived)).unwrap();
        let Revision::GitHub { archive: Some((object, BundleType::Tgz)), .. } = to_deployment(&spec).unwrap().revision
        else {
            panic!("no archive")
        };
        assert_eq!(
            (object.path().as_str(), object.sha256.as_deref()),
            ("/edgedeploy-git/acme/shop/c0ffee.tgz", Some("ab"))
        );
        let url = SPEC.replace(r#""RevisionType":"S3""#, r#""RevisionType":"URL""#);
        let (spec, _) = decode(output("TEXT/JSON", &url)).unwrap();
        assert!(to_deployment(&spec).unwrap_err().contains("UrlRevision is missing"));
        let sha = "A".repeat(64);
        let url = SPEC.replace(
            r#""RevisionType":"S3""#,
            &format!(r#""RevisionType":"URL","UrlRevision":{{"Url":"https://cdn/x.zip","Sha256":"{sha}","BundleType":"zip"}}"#),
        );
        let (spec, _) = decode(output("TEXT/JSON", &url)).unwrap();
        let d = to_deployment(&spec).unwrap();
        let Revision::Url { object, bundle_type: BundleType::Zip } = &d.revision else { panic!("not URL") };
        assert_eq!(object.sha256.as_deref(), Some("a".repeat(64).as_str()));
        let env = crate::engine::hook_environment(&d);
        assert!(env.contains(&("BUNDLE_URL".to_string(), "https://cdn/x.zip".to_string())), "{env:?}");
        let bad = url.replace("https://cdn/x.zip", "ftp://cdn/x.zip");
        let (spec, _) = decode(output("TEXT/JSON", &bad)).unwrap();
        assert!(to_deployment(&spec).unwrap_err().contains("ftp://cdn/x.zip"));
        let dir = SPEC.replace(r#""BundleType":"tgz""#, r#""BundleType":"directory""#);
        let (spec, _) = decode(output("TEXT/JSON", &dir)).unwrap();
        assert!(to_deployment(&spec).is_err());
    }

    #[test]
    fn s3_hook_environment_is_codedeploys() {
        let (spec, _) = decode(output("TEXT/JSON", SPEC)).unwrap();
        let env = crate::engine::hook_environment(&to_deployment(&spec).unwrap());
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("BUNDLE_BUCKET"), Some("b"));
        assert_eq!(get("BUNDLE_KEY"), Some("apps/k.tgz"));
        assert_eq!(get("BUNDLE_ETAG"), Some("\"abc\""));
        assert_eq!(get("BUNDLE_VERSION"), None);
        assert_eq!(get("DEPLOYMENT_GROUP_ID"), Some("g-1"));
    }

    #[test]
    fn last_event() {
        assert!(is_last_event(None, "ValidateService"));
        assert!(!is_last_event(None, "Install"));
        let (mut spec, _) = decode(output("TEXT/JSON", SPEC)).unwrap();
        spec.all_possible_lifecycle_events = vec!["DownloadBundle".into(), "Install".into(), "AfterInstall".into()];
        assert!(is_last_event(Some(&spec), "AfterInstall"));
        assert!(!is_last_event(Some(&spec), "ValidateService"));
    }

    #[test]
    fn cache_round_trip() {
        let dir = std::env::temp_dir().join(format!("edspecs-{}", std::process::id()));
        let cache = Cache::new(&dir);
        cache.create().unwrap();
        assert!(cache.load("d-ABC").is_none());
        cache.store("d-ABC", SPEC).unwrap();
        assert_eq!(cache.load("d-ABC").unwrap().deployment_id, "d-ABC");
        fs::remove_dir_all(&dir).unwrap();
    }
}
