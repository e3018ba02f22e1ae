//! Network policy in the description: which engine enforces it (`networkPolicy`, the
//! `az aks create --network-policy` choice), the Kubernetes identity of every pod (its
//! namespace and labels), and the Kubernetes NetworkPolicy objects themselves.
//!
//! Pods are slots on every node (`podsPerNode`), so their identity is a template per
//! slot: `podTemplates[i]` gives pod slot `i` of every node its namespace and labels.
//! Slots without a template live in namespace `default` with no labels.
//!
//! AKS's engine rules (use-network-policies.md): Azure Network Policy Manager only with
//! Azure CNI (kubenet is refused); Cilium only with Azure CNI, on the eBPF datapath;
//! Calico with either plugin. The engine is chosen at creation and cannot change in place.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::description::{Datapath, NetworkPlugin, Protocol};
use super::PlanError;
use crate::cidr::Ipv4Cidr;

/// Pod and namespace labels, in key order so output is stable.
pub type Labels = BTreeMap<String, String>;

/// The label every namespace carries (Kubernetes sets it since 1.21), so a policy can
/// select a namespace by name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The namespace of pods without a template and policies without one.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Policies the datapaths hold; each becomes chains (iptables) or map entries (eBPF).
pub const MAX_POLICIES: usize = 256;

/// `networkPolicy`: the engine that enforces NetworkPolicy objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicyEngine {
    /// No engine: NetworkPolicy objects would be ignored, as in a cluster without one.
    #[default]
    None,
    /// Azure Network Policy Manager: iptables and ipsets, Azure CNI only.
    Azure,
    /// Calico: either plugin.
    Calico,
    /// Cilium: Azure CNI powered by Cilium, the eBPF datapath.
    Cilium,
}

impl std::fmt::Display for NetworkPolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Azure => "azure",
            Self::Calico => "calico",
            Self::Cilium => "cilium",
        })
    }
}

/// `podTemplates[i]`: the identity of pod slot `i` on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplateDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// `namespaces[]`: labels of a namespace (namespaceSelector matches them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceDescription {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// A NetworkPolicy as `kubectl get networkpolicy -o yaml` shows it (networking.k8s.io/v1),
/// so manifests can be pasted in; `apiVersion` and `kind` may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicyDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub metadata: PolicyMetadata,
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Required, as in Kubernetes; `{}` selects every pod of the policy's namespace.
    pub pod_selector: LabelSelectorDescription,
    /// Left out: `Ingress`, plus `Egress` when the policy has egress rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<PolicyType>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IngressRuleDescription>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<EgressRuleDescription>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PolicyType {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorDescription {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: Labels,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<RequirementDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequirementDescription {
    pub key: String,
    pub operator: SelectorOperator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressRuleDescription {
    /// Left out or empty: from anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<PeerDescription>,
    /// Left out or empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRuleDescription {
    /// Left out or empty: to anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PeerDescription>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerDescription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelectorDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelectorDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_block: Option<IpBlockDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpBlockDescription {
    pub cidr: Ipv4Cidr,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<Ipv4Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortDescription {
    /// Defaults to TCP, as in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// A number; left out, every port of the protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortValue>,
    /// With `port`: the last port of a range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_port: Option<u32>,
}

/// Kubernetes allows a number or a container port name; pods here have no containers,
/// so a name is rejected with a message rather than by the YAML parser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(u32),
    Name(String),
}

// ---------------------------------------------------------------------------------------
// The validated model.

/// Everything about network policy a validated cluster carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyModel {
    pub engine: NetworkPolicyEngine,
    /// The identity of pod slot `i`; slots past the end are [`PodIdentity::default`].
    pub pod_templates: Vec<PodIdentity>,
    /// Every namespace a pod, a policy or `namespaces[]` names, with its labels
    /// (including [`NAMESPACE_NAME_LABEL`]).
    pub namespaces: Vec<Namespace>,
    pub policies: Vec<NetworkPolicy>,
}

impl PolicyModel {
    /// The namespace and labels of pod slot `slot`.
    pub fn pod_identity(&self, slot: u32) -> PodIdentity {
        self.pod_templates
            .get(slot as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// Labels of namespace `name`; an unknown namespace has only its name label.
    pub fn namespace_labels(&self, name: &str) -> Labels {
        match self.namespaces.iter().find(|n| n.name == name) {
            Some(namespace) => namespace.labels.clone(),
            None => Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.to_owned())]),
        }
    }

    /// Whether policies are enforced at all.
    pub fn enforced(&self) -> bool {
        self.engine != NetworkPolicyEngine::None
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodIdentity {
    pub namespace: String,
    pub labels: Labels,
}

impl Default for PodIdentity {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            labels: Labels::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// A validated NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicy {
    pub name: String,
    pub namespace: String,
    pub pod_selector: LabelSelector,
    /// `None`: the policy does not isolate for ingress. `Some(rules)`: it does, and the
    /// rules are what it allows (none: default deny).
    pub ingress: Option<Vec<PolicyRule>>,
    pub egress: Option<Vec<PolicyRule>>,
}

impl NetworkPolicy {
    /// `namespace/name`, how messages and datapath counters name the policy.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    pub fn rules(&self, direction: PolicyType) -> Option<&[PolicyRule]> {
        match direction {
            PolicyType::Ingress => self.ingress.as_deref(),
            PolicyType::Egress => self.egress.as_deref(),
        }
    }
}

/// One ingress or egress rule: the peers (`from` or `to`) and the ports it allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    /// Empty: any peer.
    pub peers: Vec<Peer>,
    /// Empty: any port and protocol.
    pub ports: Vec<PortRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Peer {
    /// Pods matching `pods` in the namespaces `namespaces` selects.
    Pods {
        pods: LabelSelector,
        namespaces: NamespaceScope,
    },
    /// Addresses in `cidr` but in none of `except`.
    IpBlock {
        cidr: Ipv4Cidr,
        except: Vec<Ipv4Cidr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceScope {
    /// Only the policy's own namespace (a `podSelector` without `namespaceSelector`).
    Own(String),
    Selected(LabelSelector),
}

/// Inclusive port range of one protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn matches(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol == protocol && (self.first..=self.last).contains(&port)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: SelectorOperator,
    pub values: BTreeSet<String>,
}

impl LabelSelector {
    /// Kubernetes semantics: every `matchLabels` pair and every expression must hold; an
    /// empty selector matches everything.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.requirements.is_empty()
    }
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            // NotIn matches pods without the key, as in Kubernetes.
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl std::fmt::Display for LabelSelector {
    /// `app=web,tier in (a,b)`, or `{}` for the empty selector.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("{}");
        }
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.requirements {
            let values = r.values.iter().cloned().collect::<Vec<_>>().join(",");
            parts.push(match r.operator {
                SelectorOperator::In => format!("{} in ({values})", r.key),
                SelectorOperator::NotIn => format!("{} notin ({values})", r.key),
                SelectorOperator::Exists => r.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

/// The policy parts of a description, borrowed, so `validate` passes them in one value.
pub struct PolicyDescription<'a> {
    pub engine: Option<NetworkPolicyEngine>,
    pub pod_templates: &'a [PodTemplateDescription],
    pub namespaces: &'a [NamespaceDescription],
    pub policies: &'a [NetworkPolicyDescription],
}

/// Checks AKS's engine rules and the policies, and resolves the pod identities.
pub fn resolve(
    description: &PolicyDescription,
    plugin: NetworkPlugin,
    datapath: Datapath,
    pods_per_node: u32,
) -> Result<PolicyModel, PlanError> {
    let engine = description.engine.unwrap_or_default();
    check_engine(engine, plugin, datapath)?;
    if engine == NetworkPolicyEngine::None && !description.policies.is_empty() {
        return Err(PlanError::invalid(
            "networkPolicies",
            format!(
                "{} policies are given but networkPolicy is none, so nothing would enforce \
                 them (a cluster without an engine ignores NetworkPolicy objects); set \
                 networkPolicy: {} or remove networkPolicies",
                description.policies.len(),
                suggested_engine(plugin, datapath)
            ),
        ));
    }
    if description.policies.len() > MAX_POLICIES {
        return Err(PlanError::invalid(
            "networkPolicies",
            format!(
                "{} policies, but the datapaths hold at most {MAX_POLICIES}; merge policies",
                description.policies.len()
            ),
        ));
    }
    if description.pod_templates.len() > pods_per_node as usize {
        return Err(PlanError::invalid(
            "podTemplates",
            format!(
                "{} templates but podsPerNode is {pods_per_node}: template i describes pod \
                 slot i of every node; raise podsPerNode or remove templates",
                description.pod_templates.len()
            ),
        ));
    }
    let pod_templates = description
        .pod_templates
        .iter()
        .enumerate()
        .map(|(i, template)| {
            let field = |f: &str| format!("podTemplates[{i}].{f}");
            let namespace = template
                .namespace
                .clone()
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
            check_dns_label(&field("namespace"), &namespace)?;
            check_labels(&field("labels"), &template.labels)?;
            Ok(PodIdentity {
                namespace,
                labels: template.labels.clone(),
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;

    let mut namespaces: Vec<Namespace> = Vec::new();
    for (i, namespace) in description.namespaces.iter().enumerate() {
        let field = |f: &str| format!("namespaces[{i}].{f}");
        check_dns_label(&field("name"), &namespace.name)?;
        check_labels(&field("labels"), &namespace.labels)?;
        if namespaces.iter().any(|n| n.name == namespace.name) {
            return Err(PlanError::invalid(
                field("name"),
                format!(
                    "{:?} is listed twice; list a namespace once",
                    namespace.name
                ),
            ));
        }
        let mut labels = namespace.labels.clone();
        match labels.get(NAMESPACE_NAME_LABEL) {
            Some(value) if *value != namespace.name => {
                return Err(PlanError::invalid(
                    field("labels"),
                    format!(
                        "{NAMESPACE_NAME_LABEL} is {value:?} but Kubernetes sets it to the \
                         namespace's name {:?}; remove it",
                        namespace.name
                    ),
                ))
            }
            _ => {
                labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.name.clone());
            }
        }
        namespaces.push(Namespace {
            name: namespace.name.clone(),
            labels,
        });
    }

    let mut policies: Vec<NetworkPolicy> = Vec::new();
    for (i, policy) in description.policies.iter().enumerate() {
        let resolved = resolve_policy(&format!("networkPolicies[{i}]"), policy)?;
        if let Some(j) = policies
            .iter()
            .position(|p| p.name == resolved.name && p.namespace == resolved.namespace)
        {
            return Err(PlanError::invalid(
                format!("networkPolicies[{i}].metadata.name"),
                format!(
                    "{} is already networkPolicies[{j}]; names are unique per namespace",
                    resolved.qualified_name()
                ),
            ));
        }
        policies.push(resolved);
    }

    // Every namespace a pod or a policy lives in exists, with its name label.
    let mentioned = pod_templates
        .iter()
        .map(|t| t.namespace.clone())
        .chain(std::iter::once(DEFAULT_NAMESPACE.to_owned()))
        .chain(policies.iter().map(|p| p.namespace.clone()));
    for name in mentioned {
        if !namespaces.iter().any(|n| n.name == name) {
            namespaces.push(Namespace {
                labels: Labels::from([(NAMESPACE_NAME_LABEL.to_owned(), name.clone())]),
                name,
            });
        }
    }
    Ok(PolicyModel {
        engine,
        pod_templates,
        namespaces,
        policies,
    })
}

/// AKS's pairing of engine, network plugin and (here) datapath.
pub fn check_engine(
    engine: NetworkPolicyEngine,
    plugin: NetworkPlugin,
    datapath: Datapath,
) -> Result<(), PlanError> {
    let refusal = match (engine, plugin, datapath) {
        (NetworkPolicyEngine::Azure, NetworkPlugin::Kubenet, _) => Some(
            "Azure Network Policy Manager works only with Azure CNI and AKS refuses it with \
             kubenet; use networkPolicy: calico (the engine kubenet supports) or \
             networkPlugin: azure",
        ),
        (NetworkPolicyEngine::Azure, NetworkPlugin::Azure, Datapath::Ebpf) => Some(
            "Azure Network Policy Manager programs iptables and ipsets, and Azure CNI on the \
             eBPF datapath (Azure CNI powered by Cilium) enforces policy with Cilium only; \
             use networkPolicy: cilium, or datapath: iptables",
        ),
        (NetworkPolicyEngine::Cilium, NetworkPlugin::Kubenet, _) => Some(
            "Cilium runs only with Azure CNI (Azure CNI powered by Cilium); with kubenet AKS \
             supports only calico; use networkPolicy: calico or networkPlugin: azure",
        ),
        (NetworkPolicyEngine::Cilium, NetworkPlugin::Azure, Datapath::Iptables) => Some(
            "Cilium is the eBPF datapath (Azure CNI powered by Cilium); with datapath: \
             iptables use networkPolicy: azure or calico, or set datapath: ebpf",
        ),
        _ => None,
    };
    match refusal {
        Some(why) => Err(PlanError::invalid(
            "networkPolicy",
            format!("{engine} with networkPlugin {plugin} and datapath {datapath}: {why}"),
        )),
        None => Ok(()),
    }
}

fn suggested_engine(plugin: NetworkPlugin, datapath: Datapath) -> NetworkPolicyEngine {
    match (plugin, datapath) {
        (NetworkPlugin::Azure, Datapath::Ebpf) => NetworkPolicyEngine::Cilium,
        (NetworkPlugin::Azure, Datapath::Iptables) => NetworkPolicyEngine::Azure,
        (NetworkPlugin::Kubenet, _) => NetworkPolicyEngine::Calico,
    }
}

fn resolve_policy(at: &str, policy: &NetworkPolicyDescription) -> Result<NetworkPolicy, PlanError> {
    if let Some(api_version) = &policy.api_version {
        if api_version != "networking.k8s.io/v1" {
            return Err(PlanError::invalid(
                format!("{at}.apiVersion"),
                format!("{api_version:?}: NetworkPolicy is networking.k8s.io/v1; use that or leave it out"),
            ));
        }
    }
    if let Some(kind) = &policy.kind {
        if kind != "NetworkPolicy" {
            return Err(PlanError::invalid(
                format!("{at}.kind"),
                format!("{kind:?}: only NetworkPolicy objects belong here; use NetworkPolicy or leave it out"),
            ));
        }
    }
    check_dns_label(&format!("{at}.metadata.name"), &policy.metadata.name)?;
    let namespace = policy
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    check_dns_label(&format!("{at}.metadata.namespace"), &namespace)?;
    let spec = &policy.spec;
    let pod_selector = resolve_selector(&format!("{at}.spec.podSelector"), &spec.pod_selector)?;

    let types: BTreeSet<PolicyType> = match &spec.policy_types {
        Some(types) => {
            if types.is_empty() {
                return Err(PlanError::invalid(
                    format!("{at}.spec.policyTypes"),
                    "is empty; list Ingress, Egress or both, or leave it out",
                ));
            }
            types.iter().copied().collect()
        }
        None if spec.egress.is_empty() => BTreeSet::from([PolicyType::Ingress]),
        None => BTreeSet::from([PolicyType::Ingress, PolicyType::Egress]),
    };
    for (direction, count) in [
        (PolicyType::Ingress, spec.ingress.len()),
        (PolicyType::Egress, spec.egress.len()),
    ] {
        if count > 0 && !types.contains(&direction) {
            let name = if direction == PolicyType::Ingress {
                "ingress"
            } else {
                "egress"
            };
            return Err(PlanError::invalid(
                format!("{at}.spec.{name}"),
                format!(
                    "{count} {name} rules but policyTypes leaves out {direction:?}, so \
                     Kubernetes would ignore them; add {direction:?} to policyTypes or \
                     remove the rules"
                ),
            ));
        }
    }
    let ingress = types
        .contains(&PolicyType::Ingress)
        .then(|| {
            spec.ingress
                .iter()
                .enumerate()
                .map(|(r, rule)| {
                    resolve_rule(
                        &format!("{at}.spec.ingress[{r}]"),
                        "from",
                        &rule.from,
                        &rule.ports,
                        &namespace,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let egress = types
        .contains(&PolicyType::Egress)
        .then(|| {
            spec.egress
                .iter()
                .enumerate()
                .map(|(r, rule)| {
                    resolve_rule(
                        &format!("{at}.spec.egress[{r}]"),
                        "to",
                        &rule.to,
                        &rule.ports,
                        &namespace,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(NetworkPolicy {
        name: policy.metadata.name.clone(),
        namespace,
        pod_selector,
        ingress,
        egress,
    })
}

fn resolve_rule(
    at: &str,
    peers_field: &str,
    peers: &[PeerDescription],
    ports: &[PortDescription],
    namespace: &str,
) -> Result<PolicyRule, PlanError> {
    let peers = peers
        .iter()
        .enumerate()
        .map(|(p, peer)| resolve_peer(&format!("{at}.{peers_field}[{p}]"), peer, namespace))
        .collect::<Result<Vec<_>, _>>()?;
    let ports = ports
        .iter()
        .enumerate()
        .map(|(p, port)| resolve_port(&format!("{at}.ports[{p}]"), port))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicyRule { peers, ports })
}

fn resolve_peer(at: &str, peer: &PeerDescription, namespace: &str) -> Result<Peer, PlanError> {
    match (&peer.pod_selector, &peer.namespace_selector, &peer.ip_block) {
        (None, None, Some(block)) => {
            for (e, except) in block.except.iter().enumerate() {
                if !block.cidr.contains_cidr(except) || *except == block.cidr {
                    return Err(PlanError::invalid(
                        format!("{at}.ipBlock.except[{e}]"),
                        format!(
                            "{except} is not strictly inside cidr {}; Kubernetes rejects an \
                             except outside the block, list only parts of {}",
                            block.cidr, block.cidr
                        ),
                    ));
                }
            }
            Ok(Peer::IpBlock {
                cidr: block.cidr,
                except: block.except.clone(),
            })
        }
        (_, _, Some(_)) => Err(PlanError::invalid(
            format!("{at}.ipBlock"),
            "ipBlock cannot be combined with podSelector or namespaceSelector in one peer \
             (Kubernetes rejects it); make it a peer of its own",
        )),
        (None, None, None) => Err(PlanError::invalid(
            at,
            "a peer needs podSelector, namespaceSelector or ipBlock; to allow every peer \
             leave the whole list out",
        )),
        (pods, namespaces, None) => {
            let pods = match pods {
                Some(selector) => resolve_selector(&format!("{at}.podSelector"), selector)?,
                None => LabelSelector::default(),
            };
            let namespaces = match namespaces {
                Some(selector) => NamespaceScope::Selected(resolve_selector(
                    &format!("{at}.namespaceSelector"),
                    selector,
                )?),
                None => NamespaceScope::Own(namespace.to_owned()),
            };
            Ok(Peer::Pods { pods, namespaces })
        }
    }
}

fn resolve_port(at: &str, port: &PortDescription) -> Result<PortRange, PlanError> {
    let protocol = port.protocol.unwrap_or(Protocol::Tcp);
    let number = |field: &str, value: u32| -> Result<u16, PlanError> {
        u16::try_from(value)
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| {
                PlanError::invalid(
                    format!("{at}.{field}"),
                    format!("{value} is not a port; use 1..=65535"),
                )
            })
    };
    match (&port.port, port.end_port) {
        (None, None) => Ok(PortRange {
            protocol,
            first: 0,
            last: u16::MAX,
        }),
        (None, Some(_)) => Err(PlanError::invalid(
            format!("{at}.endPort"),
            "endPort needs port (the first port of the range); add port",
        )),
        (Some(PortValue::Name(name)), _) => Err(PlanError::invalid(
            format!("{at}.port"),
            format!(
                "{name:?} is a named port, and aksnet's pods have no containers to name ports; \
                 use the port number"
            ),
        )),
        (Some(PortValue::Number(first)), end) => {
            let first = number("port", *first)?;
            let last = match end {
                None => first,
                Some(end) => {
                    let end = number("endPort", end)?;
                    if end < first {
                        return Err(PlanError::invalid(
                            format!("{at}.endPort"),
                            format!("{end} is below port {first}; endPort is the last port of the range"),
                        ));
                    }
                    end
                }
            };
            Ok(PortRange {
                protocol,
                first,
                last,
            })
        }
    }
}

fn resolve_selector(
    at: &str,
    selector: &LabelSelectorDescription,
) -> Result<LabelSelector, PlanError> {
    check_labels(&format!("{at}.matchLabels"), &selector.match_labels)?;
    let requirements = selector
        .match_expressions
        .iter()
        .enumerate()
        .map(|(e, expression)| {
            let field = format!("{at}.matchExpressions[{e}]");
            check_label_key(&format!("{field}.key"), &expression.key)?;
            let needs_values = matches!(
                expression.operator,
                SelectorOperator::In | SelectorOperator::NotIn
            );
            if needs_values && expression.values.is_empty() {
                return Err(PlanError::invalid(
                    format!("{field}.values"),
                    format!(
                        "{:?} needs at least one value; list them",
                        expression.operator
                    ),
                ));
            }
            if !needs_values && !expression.values.is_empty() {
                return Err(PlanError::invalid(
                    format!("{field}.values"),
                    format!(
                        "{:?} takes no values (Kubernetes rejects them); remove values",
                        expression.operator
                    ),
                ));
            }
            for value in &expression.values {
                check_label_value(&format!("{field}.values"), value)?;
            }
            Ok(Requirement {
                key: expression.key.clone(),
                operator: expression.operator,
                values: expression.values.iter().cloned().collect(),
            })
        })
        .collect::<Result<Vec<_>, PlanError>>()?;
    Ok(LabelSelector {
        match_labels: selector.match_labels.clone(),
        requirements,
    })
}

/// Namespace and object names: RFC 1123 labels, as Kubernetes requires.
fn check_dns_label(field: &str, name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PlanError::invalid(
            field,
            format!(
                "{name:?} is not a Kubernetes name: 1 to 63 lowercase letters, digits and \
                 dashes, starting and ending with a letter or digit"
            ),
        ))
    }
}

fn check_labels(field: &str, labels: &Labels) -> Result<(), PlanError> {
    for (key, value) in labels {
        check_label_key(field, key)?;
        check_label_value(&format!("{field}.{key}"), value)?;
    }
    Ok(())
}

/// `[prefix/]name`: name up to 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric; prefix a DNS subdomain.
fn check_label_key(field: &str, key: &str) -> Result<(), PlanError> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| check_dns_label("", part).is_ok())
    });
    if prefix_ok && label_token_ok(name) && !name.is_empty() {
        return Ok(());
    }
    Err(PlanError::invalid(
        field,
        format!(
            "{key:?} is not a label key: an optional DNS prefix and `/`, then 1 to 63 \
             letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit \
             (e.g. app or app.kubernetes.io/name)"
        ),
    ))
}

fn check_label_value(field: &str, value: &str) -> Result<(), PlanError> {
    if label_token_ok(value) {
        return Ok(());
    }
    Err(PlanError::invalid(
        field,
        format!(
            "{value:?} is not a label value: at most 63 letters, digits, `-`, `_` or `.`, \
             starting and ending with a letter or digit"
        ),
    ))
}

/// Empty, or 1..=63 of `[A-Za-z0-9._-]` with alphanumeric ends.
fn label_token_ok(token: &str) -> bool {
    token.is_empty()
        || (token.len() <= 63
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && token.starts_with(|c: char| c.is_ascii_alphanumeric())
            && token.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests;
