//! kubeadm's configuration types as Rust structs, and the strict parser every rendered
//! file goes through before it is used.
//!
//! Why: `kubeadm init` and `join` only *warn* about fields they do not know
//! (`BytesToInitConfiguration` passes `strictErrors=false`), so a misspelt key in a
//! template would be dropped silently on a real cluster. Here every struct denies
//! unknown fields, so the same typo fails the render on the machine running khactl.
//!
//! The types mirror kubeadm's versioned types field for field (Go JSON tag, nesting, Go
//! type), for each API version khactl renders: [`v1beta3`], [`v1beta4`], the types they
//! share ([`common`]) and the component configs ([`components`]). Go's inlined structs
//! (`json:",inline"`) are written out field by field: serde's `flatten` cannot be combined
//! with `deny_unknown_fields`. Unlike kubeadm, an unknown document group is an error too,
//! not a warning.

pub mod common;
pub mod components;
pub mod v1beta3;
pub mod v1beta4;

use serde::de::DeserializeOwned;

use common::TypeMeta;

pub const KUBEADM_V1BETA3: &str = "kubeadm.k8s.io/v1beta3";
pub const KUBEADM_V1BETA4: &str = "kubeadm.k8s.io/v1beta4";
pub const KUBELET_V1BETA1: &str = "kubelet.config.k8s.io/v1beta1";
pub const KUBE_PROXY_V1ALPHA1: &str = "kubeproxy.config.k8s.io/v1alpha1";

/// One decoded document of a kubeadm configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    InitV1beta3(v1beta3::InitConfiguration),
    ClusterV1beta3(v1beta3::ClusterConfiguration),
    JoinV1beta3(v1beta3::JoinConfiguration),
    InitV1beta4(v1beta4::InitConfiguration),
    ClusterV1beta4(v1beta4::ClusterConfiguration),
    JoinV1beta4(v1beta4::JoinConfiguration),
    Kubelet(components::KubeletConfiguration),
    KubeProxy(components::KubeProxyConfiguration),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::InitV1beta3(_) | Document::InitV1beta4(_) => "InitConfiguration",
            Document::ClusterV1beta3(_) | Document::ClusterV1beta4(_) => "ClusterConfiguration",
            Document::JoinV1beta3(_) | Document::JoinV1beta4(_) => "JoinConfiguration",
            Document::Kubelet(_) => "KubeletConfiguration",
            Document::KubeProxy(_) => "KubeProxyConfiguration",
        }
    }
}

/// A rendered file that kubeadm's types do not accept, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {index} ({what}){}: {detail}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
pub struct StrictError {
    /// 1-based position of the document in the file.
    pub index: usize,
    /// `kind apiVersion`, or what is missing.
    pub what: String,
    /// 1-based line in the whole file, when the parser knows it.
    pub line: Option<usize>,
    pub detail: String,
}

/// Splits `text` at its `---` lines (as kubeadm's `SplitConfigDocuments` does) and decodes
/// every document into the type its `apiVersion` and `kind` name, denying unknown fields.
/// A document without `apiVersion`/`kind`, of a group or kind khactl does not render, or
/// a kind given twice is an error (kubeadm refuses the last one too).
pub fn parse_documents(text: &str) -> Result<Vec<Document>, StrictError> {
    let mut documents: Vec<Document> = Vec::new();
    for (i, (first_line, chunk)) in split(text).into_iter().enumerate() {
        let fail = |what: String, line: Option<usize>, detail: String| StrictError {
            index: i + 1,
            what,
            line: line.map(|l| first_line + l.saturating_sub(1)),
            detail,
        };
        let meta: TypeMeta = serde_yaml_ng::from_str(chunk).map_err(|e| {
            let (line, detail) = located(&e);
            fail("not a mapping".to_owned(), line, detail)
        })?;
        let what = format!("{} {}", meta.kind, meta.api_version);
        let decode = |chunk: &str| -> Result<Document, StrictError> {
            let document = match (meta.api_version.as_str(), meta.kind.as_str()) {
                (KUBEADM_V1BETA3, "InitConfiguration") => strict(chunk).map(Document::InitV1beta3),
                (KUBEADM_V1BETA3, "ClusterConfiguration") => {
                    strict(chunk).map(Document::ClusterV1beta3)
                }
                (KUBEADM_V1BETA3, "JoinConfiguration") => strict(chunk).map(Document::JoinV1beta3),
                (KUBEADM_V1BETA4, "InitConfiguration") => strict(chunk).map(Document::InitV1beta4),
                (KUBEADM_V1BETA4, "ClusterConfiguration") => {
                    strict(chunk).map(Document::ClusterV1beta4)
                }
                (KUBEADM_V1BETA4, "JoinConfiguration") => strict(chunk).map(Document::JoinV1beta4),
                (KUBELET_V1BETA1, "KubeletConfiguration") => strict(chunk).map(Document::Kubelet),
                (KUBE_PROXY_V1ALPHA1, "KubeProxyConfiguration") => {
                    strict(chunk).map(Document::KubeProxy)
                }
                ("", _) | (_, "") => {
                    return Err(fail(
                        what.clone(),
                        Some(1),
                        "kind and apiVersion are mandatory in every document".to_owned(),
                    ));
                }
                _ => {
                    return Err(fail(
                        what.clone(),
                        Some(1),
                        "not a document khactl renders (kubeadm would ignore it)".to_owned(),
                    ));
                }
            };
            document.map_err(|(line, detail)| fail(what.clone(), line, detail))
        };
        let document = decode(chunk)?;
        if documents.iter().any(|d| d.kind() == document.kind()) {
            return Err(fail(
                what.clone(),
                Some(1),
                format!(
                    "a second {}; kubeadm takes one of each kind",
                    document.kind()
                ),
            ));
        }
        documents.push(document);
    }
    Ok(documents)
}

/// The documents of `text` with the 1-based line each starts on.
fn split(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let (mut start, mut start_line) = (0, 1);
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            chunks.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    chunks.push((start_line, &text[start..]));
    chunks
}

/// Decodes `chunk` as kubeadm would. Twice: from the text, which locates unknown fields
/// and bad values by line; then from the parsed YAML tree, whose scalars keep the type
/// YAML gave them. kubeadm turns YAML into JSON before decoding, so a plain `150` is a
/// number there and `cannot unmarshal number into ... of type string`; serde_yaml_ng's
/// text deserializer would quietly read it as "150", its tree deserializer does not.
fn strict<T: DeserializeOwned>(chunk: &str) -> Result<T, (Option<usize>, String)> {
    let _: T = serde_yaml_ng::from_str(chunk).map_err(|e| located(&e))?;
    let tree: serde_yaml_ng::Value = serde_yaml_ng::from_str(chunk).map_err(|e| located(&e))?;
    serde_yaml_ng::from_value(tree).map_err(|e| (None, format!("{e} (as kubeadm reads the YAML)")))
}

/// The line (within the document) and the message without serde's position suffix.
fn located(e: &serde_yaml_ng::Error) -> (Option<usize>, String) {
    let message = e.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    };
    (e.location().map(|l| l.line()), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBELET: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: systemd\n";

    #[test]
    fn documents_are_split_at_separator_lines_and_located_in_the_file() {
        let text = format!(
            "# head\n{KUBELET}---\napiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nclusterCIDR: 10.244.0.0/16\nmode: ipvs\n"
        );
        let err = parse_documents(&text).unwrap_err();
        assert_eq!(err.index, 2);
        assert_eq!(err.line, Some(9), "{err}");
        assert!(err.detail.contains("unknown field `mode`"), "{err}");
        assert!(
            err.to_string().starts_with(
                "document 2 (KubeProxyConfiguration kubeproxy.config.k8s.io/v1alpha1), line 9:"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_document_of_an_unknown_group_or_without_kind_is_refused() {
        let unknown = "apiVersion: example.com/v1\nkind: Thing\n";
        assert!(
            parse_documents(unknown)
                .unwrap_err()
                .detail
                .contains("not a document khactl renders")
        );
        let bare = "cgroupDriver: systemd\n";
        assert!(
            parse_documents(bare)
                .unwrap_err()
                .detail
                .contains("mandatory")
        );
        let twice = format!("{KUBELET}---\n{KUBELET}");
        assert!(
            parse_documents(&twice)
                .unwrap_err()
                .detail
                .contains("a second KubeletConfiguration")
        );
        assert!(parse_documents("---\n").is_err());
    }

    /// kubeadm decodes with Go's types: a number where a string belongs fails there, and
    /// so here; a bad token or duration fails while decoding in both.
    #[test]
    fn wrong_types_fail_as_they_do_in_kubeadm() {
        let init = |body: &str| {
            format!("apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\n{body}")
        };
        for (body, fragment) in [
            ("localAPIEndpoint: { bindPort: \"6443\" }\n", "bindPort"),
            (
                "nodeRegistration: { kubeletExtraArgs: [{ name: max-pods, value: 150 }] }\n",
                "integer `150`, expected a string",
            ),
            (
                "nodeRegistration: { kubeletExtraArgs: { max-pods: \"150\" } }\n",
                "kubeletExtraArgs",
            ),
            (
                "bootstrapTokens: [{ token: abcdef.0123456789ABCDEF }]\n",
                "not of the form",
            ),
            ("bootstrapTokens: [{ ttl: 1hour }]\n", "unknown unit"),
        ] {
            let err = parse_documents(&init(body)).unwrap_err();
            assert!(err.detail.contains(fragment), "{body}: {err}");
        }
        let ok = init("bootstrapTokens: [{ token: abcdef.0123456789abcdef, ttl: 1h0m0s }]\n");
        let docs = parse_documents(&ok).unwrap();
        let Document::InitV1beta4(init) = &docs[0] else {
            panic!("{docs:?}")
        };
        let token = init.bootstrap_tokens[0].token.as_ref().unwrap();
        assert_eq!(token.reveal(), "abcdef.0123456789abcdef");
        assert!(!format!("{docs:?}").contains("0123456789abcdef"));
    }
}
