{
  "targets": [
    {
      "target_name": "tsflanneld_native",
      "sources": [
        "native/src/addon.cc",
        "native/src/tun.cc",
        "native/src/udp.cc",
        "native/src/poll.cc",
        "native/src/netlink.cc",
        "native/src/ring.cc",
        "native/src/offload.cc",
        "native/src/bytes.cc",
        "native/src/rlimit.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "cflags_cc": ["-O2", "-std=c++17", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-exceptions"]
    }
  ]
}
