//! [`InterfaceBinding`]: how an interface connects to its network, typed. Upstream spells it as a
//! union of fields on `Interface` (`bridge: {}`, `masquerade: {}`, `binding: {name}`, ...), exactly
//! one of which is set; this enum reads and writes that union.

use crate::core::v1::{
    DeprecatedInterfaceMacvtap, DeprecatedInterfacePasst, DeprecatedInterfaceSlirp, Interface,
    InterfaceBridge, InterfaceMasquerade, InterfacePasstBinding, InterfaceSRIOV, PluginBinding,
};

/// How an interface connects to its network (the binding fields of [`Interface`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum InterfaceBinding {
    /// `bridge: {}`: the guest is bridged to the network and takes the pod's address.
    Bridge,
    /// `masquerade: {}`: NAT behind the pod's address (pod networks).
    Masquerade,
    /// `sriov: {}`: an SR-IOV virtual function passed through.
    Sriov,
    /// `passtBinding: {}`: user-space networking with passt.
    PasstBinding,
    /// `binding: {name}`: a network binding plugin registered in the KubeVirt CR.
    Plugin(String),
    /// `slirp: {}` (deprecated upstream).
    Slirp,
    /// `macvtap: {}` (deprecated upstream).
    Macvtap,
    /// `passt: {}` (deprecated upstream; use `PasstBinding` or a plugin).
    Passt,
}

impl Interface {
    /// An interface named `name` bound by `binding`.
    pub fn with_binding(name: &str, binding: InterfaceBinding) -> Self {
        let mut i = Interface {
            name: name.into(),
            ..Default::default()
        };
        i.set_binding(binding);
        i
    }

    /// Replace the interface's binding (every other binding field is cleared).
    pub fn set_binding(&mut self, binding: InterfaceBinding) {
        self.bridge = None;
        self.masquerade = None;
        self.sriov = None;
        self.passt_binding = None;
        self.binding = None;
        self.slirp = None;
        self.macvtap = None;
        self.passt = None;
        match binding {
            InterfaceBinding::Bridge => self.bridge = Some(InterfaceBridge {}),
            InterfaceBinding::Masquerade => self.masquerade = Some(InterfaceMasquerade {}),
            InterfaceBinding::Sriov => self.sriov = Some(InterfaceSRIOV {}),
            InterfaceBinding::PasstBinding => self.passt_binding = Some(InterfacePasstBinding {}),
            InterfaceBinding::Plugin(name) => self.binding = Some(PluginBinding { name }),
            InterfaceBinding::Slirp => self.slirp = Some(DeprecatedInterfaceSlirp {}),
            InterfaceBinding::Macvtap => self.macvtap = Some(DeprecatedInterfaceMacvtap {}),
            InterfaceBinding::Passt => self.passt = Some(DeprecatedInterfacePasst {}),
        }
    }

    /// Every binding the interface sets: one for a valid interface, none when the defaults are to
    /// pick it, several when the document is invalid (the validation names them).
    pub fn bindings(&self) -> Vec<InterfaceBinding> {
        let mut out = Vec::new();
        let set = [
            (self.bridge.is_some(), InterfaceBinding::Bridge),
            (self.masquerade.is_some(), InterfaceBinding::Masquerade),
            (self.sriov.is_some(), InterfaceBinding::Sriov),
            (self.passt_binding.is_some(), InterfaceBinding::PasstBinding),
            (self.slirp.is_some(), InterfaceBinding::Slirp),
            (self.macvtap.is_some(), InterfaceBinding::Macvtap),
            (self.passt.is_some(), InterfaceBinding::Passt),
        ];
        out.extend(set.into_iter().filter(|(on, _)| *on).map(|(_, b)| b));
        if let Some(p) = &self.binding {
            out.push(InterfaceBinding::Plugin(p.name.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_binding_replaces_and_bindings_reads_the_union() {
        let mut i = Interface::with_binding("default", InterfaceBinding::Bridge);
        assert_eq!(i.bindings(), vec![InterfaceBinding::Bridge]);
        i.set_binding(InterfaceBinding::Plugin("passt".into()));
        assert_eq!(i.bindings(), vec![InterfaceBinding::Plugin("passt".into())]);
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "default", "binding": {"name": "passt"}})
        );
        let both: Interface = serde_json::from_value(
            serde_json::json!({"name": "x", "bridge": {}, "masquerade": {}}),
        )
        .unwrap();
        assert_eq!(both.bindings().len(), 2);
        assert!(Interface::default().bindings().is_empty());
    }
}
