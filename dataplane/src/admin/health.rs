//! What `/healthz` answers, from the runtime's status (pure): ready only when a config is
//! applied, every listener is bound and every VirtualIP is served; otherwise each problem
//! by name.

use crate::runtime::RuntimeStatus;
use halo_crds::protocol::VrrpState;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    NoConfig,
    Ready,
    /// One line per listener or VirtualIP that is not serving.
    NotReady(Vec<String>),
}

pub fn health(status: &RuntimeStatus) -> Health {
    if status.version.is_none() {
        return Health::NoConfig;
    }
    let mut problems: Vec<String> = status
        .bind_errors
        .iter()
        .map(|b| {
            format!(
                "listener {} cannot bind {}: {}",
                b.listener, b.address, b.error
            )
        })
        .collect();
    for v in status.vips.iter().filter(|v| v.state == "Error") {
        let error = v.error.as_deref().unwrap_or("cannot hold its addresses");
        problems.push(format!("VirtualIP {}: {error}", v.name));
    }
    for v in &status.vrrp {
        match (&v.error, v.state) {
            (Some(e), _) => problems.push(format!("VirtualIP {} (VRRP): {e}", v.name)),
            (None, VrrpState::Fault) => {
                problems.push(format!("VirtualIP {} (VRRP): in Fault", v.name))
            }
            _ => {}
        }
    }
    if problems.is_empty() {
        Health::Ready
    } else {
        Health::NotReady(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::BindError;
    use crate::vip::VipStatus;
    use crate::vrrp::instance::InstanceStatus;

    fn applied() -> RuntimeStatus {
        RuntimeStatus {
            node: Some("a".into()),
            version: Some(1),
            hash: Some("h".into()),
            vips: Vec::new(),
            vrrp: Vec::new(),
            bind_errors: Vec::new(),
            listeners: Vec::new(),
        }
    }

    fn vrrp(name: &str, state: VrrpState, error: Option<&str>) -> InstanceStatus {
        InstanceStatus {
            name: name.into(),
            vrid: 1,
            state,
            priority: 100,
            interface: None,
            since_ms_ago: 0,
            error: error.map(String::from),
            since: None,
            checks: Vec::new(),
            interfaces: Vec::new(),
        }
    }

    #[test]
    fn table_of_health() {
        let mut none = applied();
        none.version = None;
        let mut squatted = applied();
        squatted.bind_errors.push(BindError {
            address: "127.0.0.1:80".into(),
            listener: "ns/lb/web".into(),
            error: "Address in use".into(),
        });
        let mut unheld = applied();
        unheld.vips.push(VipStatus {
            name: "web".into(),
            addresses: vec![],
            state: "Error".into(),
            error: Some("no such interface".into()),
        });
        let mut backup = applied();
        backup.vrrp.push(vrrp("db", VrrpState::Backup, None));
        let mut fault = applied();
        fault.vrrp.push(vrrp("db", VrrpState::Fault, None));
        let cases = [
            (none, Health::NoConfig),
            (applied(), Health::Ready),
            (backup, Health::Ready),
            (
                squatted,
                Health::NotReady(vec![
                    "listener ns/lb/web cannot bind 127.0.0.1:80: Address in use".into(),
                ]),
            ),
            (
                unheld,
                Health::NotReady(vec!["VirtualIP web: no such interface".into()]),
            ),
            (
                fault,
                Health::NotReady(vec!["VirtualIP db (VRRP): in Fault".into()]),
            ),
        ];
        for (status, want) in cases {
            assert_eq!(health(&status), want, "{status:?}");
        }
    }
}
