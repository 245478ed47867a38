"""Numbers from the kernel's netlink and nf_tables headers, named once.

Only what edgectl speaks: netlink framing, nfnetlink, nf_tables (tables,
chains, rules, sets, elements, objects, batches).  ctnetlink and nfnetlink_log
attributes stay with their one user (``conntrack``, ``nflog``).
"""

from __future__ import annotations

# --- <linux/netlink.h> -------------------------------------------------------
NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; Python's socket module does not export it
SO_SNDBUFFORCE = 32  # likewise
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # errors echo only the request header, not its payload
NETLINK_EXT_ACK = 11  # errors carry the kernel's text message (NLMSGERR_ATTR_MSG)

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: only the request header was echoed
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack TLVs follow
NLM_F_CREATE = 0x400  # on a NEW request: create if absent

NLMSGERR_ATTR_MSG = 1

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# --- <linux/netfilter/nfnetlink.h>, <linux/netfilter.h> ---------------------
NFNL_SUBSYS_NFTABLES = 10
NFNETLINK_V0 = 0
# Batch markers: the messages between BEGIN and END commit as one transaction.
NFNL_MSG_BATCH_BEGIN = 16
NFNL_MSG_BATCH_END = 17
NFPROTO_INET = 1
NFPROTO_IPV4 = 2
NFPROTO_ARP = 3
NFPROTO_NETDEV = 5
NFPROTO_BRIDGE = 7
NFPROTO_IPV6 = 10

NF_DROP = 0
NF_ACCEPT = 1

# --- <linux/netfilter/nf_tables.h> ------------------------------------------
NFT_MSG_NEWTABLE = 0
NFT_MSG_GETTABLE = 1
NFT_MSG_NEWCHAIN = 3
NFT_MSG_GETCHAIN = 4
NFT_MSG_NEWRULE = 6
NFT_MSG_GETRULE = 7
NFT_MSG_NEWSET = 9
NFT_MSG_GETSET = 10
NFT_MSG_NEWSETELEM = 12
NFT_MSG_GETSETELEM = 13
NFT_MSG_DELSETELEM = 14
NFT_MSG_NEWGEN = 15
NFT_MSG_GETGEN = 16
NFT_MSG_NEWOBJ = 18
NFT_MSG_GETOBJ = 19

NFTA_TABLE_NAME = 1

NFTA_HOOK_HOOKNUM = 1
NFTA_HOOK_PRIORITY = 2

NFTA_CHAIN_TABLE = 1
NFTA_CHAIN_HANDLE = 2
NFTA_CHAIN_NAME = 3
NFTA_CHAIN_HOOK = 4
NFTA_CHAIN_POLICY = 5
NFTA_CHAIN_TYPE = 7

NFTA_RULE_TABLE = 1
NFTA_RULE_CHAIN = 2
NFTA_RULE_HANDLE = 3
NFTA_RULE_USERDATA = 7

NFT_SET_ANONYMOUS = 0x1
NFT_SET_CONSTANT = 0x2
NFT_SET_INTERVAL = 0x4
NFT_SET_MAP = 0x8
NFT_SET_TIMEOUT = 0x10
NFT_SET_EVAL = 0x20
NFT_SET_OBJECT = 0x40
NFT_SET_CONCAT = 0x80
NFT_SET_EXPR = 0x100

NFTA_SET_DESC_SIZE = 1

NFTA_SET_TABLE = 1
NFTA_SET_NAME = 2
NFTA_SET_FLAGS = 3
NFTA_SET_KEY_TYPE = 4
NFTA_SET_KEY_LEN = 5
NFTA_SET_DATA_TYPE = 6
NFTA_SET_DATA_LEN = 7
NFTA_SET_DESC = 9
NFTA_SET_TIMEOUT = 11
NFTA_SET_USERDATA = 13

NFTA_LIST_ELEM = 1

NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_TIMEOUT = 4  # milliseconds, be64

NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3

NFTA_DATA_VALUE = 1

NFTA_GEN_ID = 1

NFT_OBJECT_COUNTER = 1
NFTA_OBJ_TABLE = 1
NFTA_OBJ_NAME = 2
NFTA_OBJ_TYPE = 3
NFTA_OBJ_DATA = 4

NFTA_COUNTER_BYTES = 1
NFTA_COUNTER_PACKETS = 2

# libnftnl <libnftnl/udata.h>: rule userdata is a TLV list (u8 type, u8 len);
# nft stores ``comment "..."`` as type 0, NUL-terminated.
NFTNL_UDATA_RULE_COMMENT = 0
