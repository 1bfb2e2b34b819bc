from ipaddress import ip_address

from netplug.net.veth import container_mac


def test_the_container_mac_follows_from_its_ipv4_address():
    """Locally administered, unicast (0x0a), and the address's bytes: one address,
    one MAC, whichever container holds it."""
    assert container_mac(ip_address("10.244.95.7")) == "0a:58:0a:f4:5f:07"
    assert container_mac(ip_address("10.244.95.8")) != container_mac(ip_address("10.244.95.7"))
