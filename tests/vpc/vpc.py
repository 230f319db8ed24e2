"""Drives `iqd serve` with IBM's unmodified `ibm-vpc` SDK, one step per call, for
tests/tests/serve.rs (which checks the traffic between steps). Prints one JSON object.

Environment: IQD_VPC_URL (http://127.0.0.1:PORT/v1), IQD_VPC_TOKEN (the bearer token).
"""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator
from ibm_vpc import VpcV1
from ibm_vpc.vpc_v1 import (
    BareMetalServerInitializationPrototype,
    BareMetalServerNetworkInterfacePrototypeBareMetalServerNetworkInterfaceByHiperSocketPrototype as HiperSocket,
    BareMetalServerPrimaryNetworkInterfacePrototype as Primary,
    BareMetalServerProfileIdentityByName,
    BareMetalServerPrototypeBareMetalServerByNetworkInterface as ServerPrototype,
    ImageIdentityById,
    NetworkInterfaceIPPrototypeReservedIPPrototypeNetworkInterfaceContext as IpPrototype,
    SecurityGroupIdentityById,
    SecurityGroupRulePrototypeSecurityGroupRuleProtocolTCPUDP as TcpRule,
    SecurityGroupRulePrototypeSecurityGroupRuleProtocolICMP as IcmpRule,
    SubnetIdentityById,
    SubnetPrototypeSubnetByCIDR,
    VPCIdentityById,
    ZoneIdentityByName,
)


def service(token=None):
    vpc = VpcV1(
        version="2025-04-08",
        authenticator=BearerTokenAuthenticator(token or os.environ["IQD_VPC_TOKEN"]),
    )
    vpc.set_service_url(os.environ["IQD_VPC_URL"])
    return vpc


def error(e):
    """The VPC error body's first code, and the status."""
    try:
        body = e.http_response.json()
        code = body["errors"][0]["code"]
        assert body["status_code"] == e.status_code, body
        assert body["trace"], body
        assert "more_info" in body["errors"][0], body
    except (ValueError, KeyError, IndexError, AttributeError):
        code = None
    return {"status": e.status_code, "code": code, "message": e.message}


def attempt(f, *args, **kwargs):
    """{"status", "code"} of a call, or {"status", "result"}."""
    try:
        r = f(*args, **kwargs)
        return {"status": r.get_status_code(), "result": r.get_result()}
    except ApiException as e:
        return error(e)


def server(vpc, name, profile, subnet, address=None, groups=None, more=()):
    primary = Primary(
        subnet=SubnetIdentityById(subnet),
        interface_type="hipersocket",
        name=f"{name}-eth0",
        primary_ip=IpPrototype(address=address) if address else None,
        security_groups=[SecurityGroupIdentityById(g) for g in groups] if groups else None,
    )
    prototype = ServerPrototype(
        initialization=BareMetalServerInitializationPrototype(
            image=ImageIdentityById("r134-ignored"), keys=[]
        ),
        profile=BareMetalServerProfileIdentityByName(profile),
        zone=ZoneIdentityByName("iqd-1"),
        primary_network_interface=primary,
        name=name,
        network_interfaces=[
            HiperSocket(subnet=SubnetIdentityById(s), interface_type="hipersocket", name=f"{name}-eth{k + 1}")
            for k, s in enumerate(more)
        ]
        or None,
    )
    return vpc.create_bare_metal_server(prototype).get_result()


def tcp_rule(port, direction="inbound"):
    return TcpRule(direction=direction, protocol="tcp", port_min=port, port_max=port)


def setup(prefix, datapath_note=""):
    """A VPC, two subnets, three servers, the group `web` (inbound TCP 8080) bound to s3's
    interface through a target binding instead of the default group."""
    vpc = service()
    v = vpc.create_vpc(name=prefix).get_result()
    a = vpc.create_subnet(
        SubnetPrototypeSubnetByCIDR(vpc=VPCIdentityById(v["id"]), ipv4_cidr_block="10.80.0.0/24", name="a")
    ).get_result()
    b = vpc.create_subnet(
        SubnetPrototypeSubnetByCIDR(vpc=VPCIdentityById(v["id"]), ipv4_cidr_block="10.81.0.0/24", name="b")
    ).get_result()
    web = vpc.create_security_group(
        VPCIdentityById(v["id"]),
        name="web",
        rules=[tcp_rule(8080), IcmpRule(direction="inbound", protocol="icmp", type=8)],
    ).get_result()
    s1 = server(vpc, f"{prefix}a", "mz2d-metal-16x512", a["id"])
    s2 = server(vpc, f"{prefix}b", "mz2d-metal-16x512", a["id"], more=[b["id"]])
    s3 = server(vpc, f"{prefix}c", "mz2d-metal-2x64", b["id"], address="10.81.0.30")
    nic3 = s3["primary_network_interface"]["id"]
    bound = vpc.create_security_group_target_binding(web["id"], nic3)
    assert bound.get_status_code() == 201, bound.get_status_code()
    default = v["default_security_group"]["id"]
    vpc.delete_security_group_target_binding(default, nic3)
    targets = vpc.list_security_group_targets(web["id"]).get_result()["targets"]
    assert [t["id"] for t in targets] == [nic3], targets
    nic = vpc.get_bare_metal_server_network_interface(s3["id"], nic3).get_result()
    assert [g["name"] for g in nic["security_groups"]] == ["web"], nic
    assert nic["interface_type"] == "hipersocket", nic
    profiles = [p["name"] for p in vpc.list_bare_metal_server_profiles().get_result()["profiles"]]
    return {
        "vpc": v["id"],
        "subnets": [a["id"], b["id"]],
        "web": web["id"],
        "default_group": default,
        "servers": [
            {
                "id": s["id"],
                "netns": s["netns"],
                "lpar": s["lpar"],
                "status": s["status"],
                "addresses": [n["primary_ip"]["address"] for n in s["network_interfaces"]],
            }
            for s in (s1, s2, s3)
        ],
        "profiles": profiles,
    }


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    vpc = service()
    if cmd == "setup":
        out = setup(args[0])
    elif cmd == "add-rule":
        out = attempt(vpc.create_security_group_rule, args[0], tcp_rule(int(args[1])))
    elif cmd == "delete-rule":
        out = attempt(vpc.delete_security_group_rule, args[0], args[1])
    elif cmd == "stop":
        out = attempt(vpc.stop_bare_metal_server, args[0], "hard")
        out["server"] = vpc.get_bare_metal_server(args[0]).get_result()["status"]
    elif cmd == "start":
        out = attempt(vpc.start_bare_metal_server, args[0])
        out["server"] = vpc.get_bare_metal_server(args[0]).get_result()["status"]
    elif cmd == "add-nic":
        out = attempt(
            vpc.create_bare_metal_server_network_interface,
            args[0],
            HiperSocket(subnet=SubnetIdentityById(args[1]), interface_type="hipersocket", name="added"),
        )
    elif cmd == "get-server":
        out = attempt(vpc.get_bare_metal_server, args[0])
    elif cmd == "list":
        # Every page, through the SDK's pager (limit, start, next.href).
        from ibm_vpc.vpc_v1 import BareMetalServersPager

        pager = BareMetalServersPager(client=vpc, limit=int(args[0]))
        out = {"names": [s["name"] for s in pager.get_all()]}
    elif cmd == "rules":
        out = {"rules": vpc.list_security_group_rules(args[0]).get_result()["rules"]}
    elif cmd == "concurrent-rules":
        group, n, base = args[0], int(args[1]), int(args[2])

        def create(port):
            # Each thread its own client: requests sessions are not shared across threads.
            r = attempt(service().create_security_group_rule, group, tcp_rule(port))
            return {"port": port, "status": r["status"], "id": r.get("result", {}).get("id"), "code": r.get("code")}

        with ThreadPoolExecutor(max_workers=n) as pool:
            out = {"created": list(pool.map(create, range(base, base + n)))}
    elif cmd == "errors":
        out = errors(vpc, *args)
    elif cmd == "wrong-token":
        out = attempt(service("not-the-token-0123456789").list_vpcs)
    elif cmd == "teardown":
        out = teardown(vpc)
    else:
        raise SystemExit(f"unknown step {cmd}")
    print(json.dumps(out))


def errors(vpc, vpc_id, subnet_a, subnet_b, running, stopped, group):
    """Each refusal's status and code."""
    out = {}
    out["unknown_profile"] = attempt(server, vpc, "nope", "mz2d-metal-99x1", subnet_a)
    out["outside_subnet"] = attempt(server, vpc, "nope", "mz2d-metal-2x64", subnet_a, address="10.99.0.7")
    out["address_in_use"] = attempt(
        server, vpc, "nope", "mz2d-metal-2x64", subnet_b, address="10.81.0.30"
    )
    out["third_interface"] = attempt(
        vpc.create_bare_metal_server_network_interface,
        stopped,
        HiperSocket(subnet=SubnetIdentityById(subnet_b), interface_type="hipersocket"),
    )
    out["running"] = attempt(
        vpc.create_bare_metal_server_network_interface,
        running,
        HiperSocket(subnet=SubnetIdentityById(subnet_b), interface_type="hipersocket"),
    )
    out["bad_rule_ports"] = attempt(
        vpc.create_security_group_rule,
        group,
        TcpRule(direction="inbound", protocol="tcp", port_min=900, port_max=80),
    )
    out["bad_rule_direction"] = attempt(
        vpc.create_security_group_rule,
        group,
        TcpRule(direction="sideways", protocol="tcp", port_min=80, port_max=80),
    )
    out["unknown_server"] = attempt(vpc.get_bare_metal_server, "0717-nope")
    out["unknown_subnet"] = attempt(vpc.get_subnet, "0717-nope")
    out["unknown_group"] = attempt(vpc.get_security_group, "0717-nope")
    out["unknown_rule"] = attempt(vpc.get_security_group_rule, group, "0717-nope")
    out["unknown_vpc"] = attempt(vpc.get_vpc, "0717-nope")
    out["unknown_profile_get"] = attempt(vpc.get_bare_metal_server_profile, "mz2d-metal-99x1")
    out["subnet_in_use"] = attempt(vpc.delete_subnet, subnet_a)
    out["vpc_in_use"] = attempt(vpc.delete_vpc, vpc_id)
    return out


def teardown(vpc):
    for s in vpc.list_bare_metal_servers().get_result()["bare_metal_servers"]:
        vpc.delete_bare_metal_server(s["id"])
    for s in vpc.list_subnets().get_result()["subnets"]:
        vpc.delete_subnet(s["id"])
    vpcs = vpc.list_vpcs().get_result()["vpcs"]
    for g in vpc.list_security_groups().get_result()["security_groups"]:
        if all(g["id"] != v["default_security_group"]["id"] for v in vpcs):
            vpc.delete_security_group(g["id"])
    for v in vpcs:
        vpc.delete_vpc(v["id"])
    return {"vpcs": len(vpcs)}


if __name__ == "__main__":
    main()
