"""URL safety rules: KAITO's own, plus unusual IP notations and names resolving to internal addresses."""

import pytest

from workspaces.netguard import UnsafeURL, check_url, parse_ip_literal


def fake_dns(table):
    def resolve(host, port):
        if host not in table:
            raise OSError(-2, "Name or service not known")
        return table[host]

    return resolve


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/data.csv", "Only absolute http"),
        ("/data/train.parquet", "Only absolute http"),
        ("https:///nohost", "no host name"),
        ("http://localhost/x", "local or cloud metadata"),
        ("http://api.localhost/x", "local or cloud metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "local or cloud metadata"),
        ("http://instance-data.ec2.internal/", "local or cloud metadata"),
        ("http://127.0.0.1/x", "loopback"),
        ("http://10.1.2.3/x", "private network"),
        ("http://192.168.0.10/x", "private network"),
        ("http://169.254.169.254/metadata/instance", "link-local"),
        ("http://[::1]/x", "loopback"),
        ("http://[fe80::1]/x", "link-local"),
        ("http://[fd00:ec2::254]/x", "private network"),
        ("http://[::ffff:127.0.0.1]/x", "IPv4 address inside IPv6"),
        ("http://[::ffff:a9fe:a9fe]/x", "link-local"),
        ("http://[64:ff9b::a00:1]/x", "private network"),
        ("http://0.0.0.0/x", "unspecified"),
        ("http://100.100.100.200/latest/meta-data/", "carrier-grade NAT"),
        ("http://2130706433/x", "unusual notation (it means 127.0.0.1)"),
        ("http://0x7f000001/x", "unusual notation"),
        ("http://0177.0.0.1/x", "unusual notation"),
        ("http://127.1/x", "unusual notation"),
        ("http://0x7f.1/x", "unusual notation"),
        ("http://8.8.8.010/x", "unusual notation (it means 8.8.8.8)"),
        ("http://127.0.0.1./x", "loopback"),
        ("http://%31%32%37.0.0.1/x", "Percent-encoded"),
        ("http://example.com\\@127.0.0.1/x", "backslashes"),
        ("http://exa mple.com/x", "spaces"),
        ("http://１２７.0.0.1/x", "non-ASCII"),
        ("http://example.com:99999/x", "malformed"),
    ],
)
def test_refused_urls_say_why(url, message):
    with pytest.raises(UnsafeURL, match=None) as caught:
        check_url(url, resolver=fake_dns({}))
    assert message in str(caught.value)


def test_userinfo_does_not_hide_the_real_host():
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url("http://huggingface.co@127.0.0.1/x", resolver=fake_dns({}))


def test_names_resolving_to_internal_addresses_are_refused():
    dns = fake_dns({"evil.example": ["93.184.216.34", "10.0.0.5"], "good.example": ["93.184.216.34"]})
    with pytest.raises(UnsafeURL, match=r"resolves to 10\.0\.0\.5, a private network address"):
        check_url("https://evil.example/data.jsonl", resolver=dns)
    checked = check_url("https://good.example:8443/data.jsonl", resolver=dns)
    assert checked.addresses == ("93.184.216.34",) and checked.port == 8443 and not checked.resolution_error


def test_unresolvable_names_pass_with_the_reason_recorded():
    checked = check_url("https://huggingface.co/datasets/x/resolve/main/train.parquet", resolver=fake_dns({}))
    assert checked.addresses == ()
    assert "could not resolve huggingface.co" in checked.resolution_error


def test_public_literal_and_allow_list():
    assert check_url("https://93.184.216.34/x").addresses == ("93.184.216.34",)
    assert check_url("http://127.0.0.1:8080/x", allow_hosts={"127.0.0.1"}).host == "127.0.0.1"


@pytest.mark.parametrize(
    ("host", "address", "unusual"),
    [
        ("127.0.0.1", "127.0.0.1", False),
        ("2130706433", "127.0.0.1", True),
        ("017700000001", "127.0.0.1", True),
        ("10.0.1", "10.0.0.1", True),
        ("[::1]", "::1", False),
        ("example.com", None, False),
        ("1.2.3.4.5", None, False),
        ("256.1.1.1", None, False),
    ],
)
def test_parse_ip_literal(host, address, unusual):
    parsed, is_unusual = parse_ip_literal(host)
    assert (str(parsed) if parsed else None, is_unusual) == (address, unusual)


def test_allow_list_covers_names_resolving_to_allowed_addresses():
    dns = fake_dns({"data.test": ["127.0.0.1"], "mixed.test": ["127.0.0.1", "10.0.0.5"]})
    checked = check_url("http://data.test:8080/x", resolver=dns, allow_hosts={"127.0.0.1"})
    assert checked.addresses == ("127.0.0.1",)
    with pytest.raises(UnsafeURL, match="loopback"):
        check_url("http://data.test:8080/x", resolver=dns)
    with pytest.raises(UnsafeURL, match=r"10\.0\.0\.5"):
        check_url("http://mixed.test/x", resolver=dns, allow_hosts={"127.0.0.1"})
