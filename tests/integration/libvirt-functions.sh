# vmdiskfs - helpers for the libvirt-mode integration tests (bash), with a
# real libvirtd and real qemu (TESTING.md).  Source it after functions.sh:
#
#   . "$(dirname "$0")/functions.sh"
#   . "$(dirname "$0")/libvirt-functions.sh"
#   lv_start
#
# Everything a test makes is named "$LV_PREFIX-..." (vdt-<script>-<pid>),
# so tests can run in parallel (make check -j2) and never touch domains,
# pools or loop devices they did not make.  Cleanup (registered with
# on_exit, so it runs however the test ends): destroy and undefine
# (--snapshots-metadata --nvram) the domains made here, destroy and
# undefine the pools, detach the loop devices.
#
# Variables:
#   LV_URI        the libvirt connection (default qemu:///system)
#   LV_PREFIX     vdt-<script name>-$$
#   LV_DOMTYPE    the <domain type=...> of every test domain: kvm when
#                 qemu (run by libvirt as libvirt-qemu, group kvm) can
#                 open /dev/kvm, else qemu (TCG: slower, but the same
#                 domain to every test).  Set here, once; tests write
#                 <domain type='$LV_DOMTYPE'> and expect it back.
#   LV_ACCEL      the same choice for a qemu-system-x86_64 run as root by
#                 a test itself: kvm or tcg (-accel $LV_ACCEL)
#   LV_MNT_DIR    where to mount vmdiskfs (set by lv_start): a shared
#                 mount, so an unmount propagates into the mount
#                 namespaces of VMs started meanwhile (see _lv_shared_dir)
#
# Functions:
#   lv_start              skip (77) unless libvirtd and qemu are usable
#                         (without /dev/kvm, under TCG): starts virtlogd/libvirtd if they are not
#                         running, waits until virsh answers; takes the
#                         shared test lock (see lv_exclusive)
#   lv_virsh ARG...       virsh -q -c "$LV_URI" ARG...
#   lv_define NAME SPEC...  define a domain (type LV_DOMTYPE, machine pc, 128 MiB,
#                         1 vCPU, VNC on 127.0.0.1, boots from its first
#                         disk if that has a boot sector, else sits in the
#                         firmware).  One SPEC per disk, TYPE:TARGET:SOURCE
#                           qcow2:vda:/path/img.qcow2   file, format qcow2
#                           raw:vdb:/path/img.raw       file, format raw
#                           qed:vdc:/path/img.qed       file, format qed
#                           block:vdd:/dev/loop3        block device, raw
#                           volume:vde:POOL/VOLUME      a pool's volume
#                                                       (format from the pool)
#                           cdrom:sda:/path/x.iso       a cdrom (SOURCE may be
#                                                       empty: no medium)
#                           net:vda:<source protocol='nbd' ...>...</source>
#                                                       a network disk, raw
#                                                       (the XML as given)
#                         virtio targets (vd*) on bus virtio, sd* on sata,
#                         hd* on ide.  The domain is undefined at exit.
#                         Defining a NAME again redefines it (same UUID).
#   lv_forget_later NAME  undefine NAME at exit too (a domain a test
#                         defined with virsh itself)
#   lv_running NAME       true if the domain is running
#   lv_pool NAME DIR      define and start a dir storage pool on DIR
#   lv_loop FILE          attach FILE to a free loop device, its path in
#                         LV_LOOP (not in a subshell: it is detached at exit)
#   lv_alive MNT          fail the test, with the log's tail, if the daemon
#                         serving MNT has died
#   lv_image FMT PATH SIZE  qemu-img create -f FMT
#   lv_writer_bootsector OUT  assemble writer-bootsector.S into a 512-byte
#                         boot sector OUT (skips the test without binutils)
#   lv_write_bootsector IMG  put the writer boot sector at sector 0 of the
#                         qcow2 or raw image IMG (qemu-io)
#   lv_allocated IMG      bytes allocated in IMG's data (qemu-img map -U)
#   lv_writer_count IMG   "COUNT ERRORS" of the writer guest on IMG (sector 1)
#   lv_mount MNT [OPT...] start_vmdiskfs MNT in libvirt mode on LV_URI;
#                         skips the test (77) if the daemon says libvirt
#                         mode is not built yet
#   lv_raw_oracle IMG OUT [SNAP]  qemu-img convert -U -O raw (of snapshot
#                         SNAP, via a reverted copy, if given)
#   lv_escape NAME        the name as vmdiskfs shows it (%, /, . and ..)
#   lv_exclusive          wait (up to 5 min) until no other libvirt test
#                         runs, and keep them waiting until this test ends:
#                         for restarting libvirtd
#   lv_daemon NAME        start virtlogd or libvirtd (-d) with no file of
#                         the test open
#   lv_started_libvirtd   true if the running libvirtd was started by a test
#                         (lv_start), so a test may restart it
#
# For tests with many independent checks (one FAIL line each, the test
# fails at the end if any did; MNT is the test's mount point):
#   failures              the count of failed checks (0 here)
#   check MESSAGE COMMAND...  run COMMAND; if it fails, fail the test now
#                         if the daemon serving $MNT died (lv_alive), else
#                         print "FAIL: MESSAGE" and count it in failures
#   same_bytes FILE1 FILE2  true if the files are equal (cmp -s)
#   eq A B                true if the strings are equal

_lv_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${LV_URI:=qemu:///system}"
LV_PREFIX="vdt-$(basename "${0%.sh}")-$$"
LV_LOCK=/run/lock/vmdiskfs-libvirt-tests.lock
LV_MARK=/run/lock/vmdiskfs-tests-libvirtd.pid
export LV_URI LV_PREFIX

# KVM where qemu may use it, else TCG: the one place that decides.  A
# machine without /dev/kvm (CI, nested without VT-x) runs every VM test
# under TCG; one whose /dev/kvm is root-only 0600 (no udev: see
# tests/install-deps.sh, which makes it root:kvm 0660) too, rather than
# failing every "virsh start" with "Could not access KVM kernel module".
_lv_kvm_usable ()
{
  local st
  [ -c /dev/kvm ] || return 1
  # A node whose driver is not there (no VT-x, a container): ENXIO.
  ( exec 3<>/dev/kvm ) 2>/dev/null || return 1
  [ "${1:-libvirt}" = root ] && { [ -r /dev/kvm ] && [ -w /dev/kvm ]; return; }
  st=$(stat -c '%G %a' /dev/kvm 2>/dev/null) || return 1
  case $st in
    kvm\ ?[67]?|*\ ??[67]) return 0 ;;
  esac
  return 1
}
if [ -z "${LV_DOMTYPE:-}" ]; then
  if _lv_kvm_usable; then LV_DOMTYPE=kvm; else LV_DOMTYPE=qemu; fi
fi
if [ -z "${LV_ACCEL:-}" ]; then
  if _lv_kvm_usable root; then LV_ACCEL=kvm; else LV_ACCEL=tcg; fi
fi
export LV_DOMTYPE LV_ACCEL

_lv_domains=()
_lv_pools=()
_lv_loops=()

lv_virsh ()
{
  virsh -q -c "$LV_URI" "$@"
}

_lv_answers ()
{
  virsh -c "$LV_URI" version >/dev/null 2>&1
}

lv_start ()
{
  require virsh qemu-img qemu-io
  [ "$(id -u)" = 0 ] || skip "libvirt tests need root"
  [ "$LV_DOMTYPE" = kvm ] ||
    echo "note: /dev/kvm $( [ -c /dev/kvm ] && echo 'is not usable by the kvm group' || echo 'is absent'): domains of type qemu (TCG)"
  command -v qemu-system-x86_64 >/dev/null 2>&1 || skip "no qemu-system-x86_64"
  if ! _lv_answers; then
    command -v libvirtd >/dev/null 2>&1 || skip "no libvirtd"
    lv_virtlogd || skip "virtlogd does not start"
    if ! _lv_answers; then
      lv_daemon libvirtd || skip "libvirtd does not start"
      wait_for 30 _lv_answers || skip "libvirtd does not answer"
      pgrep -x -o libvirtd >"$LV_MARK" 2>/dev/null
    fi
  fi
  lv_virtlogd || skip "virtlogd does not start"
  # qemu runs as libvirt-qemu: it must reach the images under TEST_DIR.
  chmod 0755 "$TEST_DIR"
  _lv_lock_shared
  on_exit lv_cleanup
  _lv_shared_dir
}

# libvirt starts qemu in a mount namespace of its own, a copy of the host's
# made with MS_SLAVE.  Where / is a private mount (no systemd as PID 1, as
# on the test machines) every FUSE mount that exists when any VM on the
# host starts stays mounted in that VM's namespace after fusermount3 -u
# here, and its daemon waits for requests until that VM stops.  Under a
# shared mount (as systemd makes /), the unmount propagates.  So the tests
# mount under LV_MNT_DIR, a shared bind mount of a directory onto itself.
_lv_shared_dir ()
{
  LV_MNT_DIR=$TEST_DIR/shared
  mkdir -p "$LV_MNT_DIR"
  if mount --bind "$LV_MNT_DIR" "$LV_MNT_DIR" 2>/dev/null; then
    on_exit _lv_unshare
    mount --make-shared "$LV_MNT_DIR" ||
      echo "warning: cannot make $LV_MNT_DIR a shared mount" >&2
  else
    echo "warning: cannot bind-mount $LV_MNT_DIR (VMs started meanwhile may keep the mount)" >&2
  fi
}

# At exit, before the domains go: the mounts under LV_MNT_DIR, then it.
_lv_unshare ()
{
  local m i
  for m in "${!_vmdiskfs_pids[@]}"; do
    case $m in "$LV_MNT_DIR"/*) stop_vmdiskfs "$m" >/dev/null 2>&1 ;; esac
  done
  for ((i = 0; i < 20; i++)); do
    umount "$LV_MNT_DIR" 2>/dev/null && return
    sleep 0.1
  done
  umount -l "$LV_MNT_DIR"
}

# The test lock is held by a helper process (flock -o), never by a file
# descriptor of this shell: the daemons a test starts (libvirtd -d,
# vmdiskfs) would inherit one and hold the lock for ever.  The helper's
# child ends within a second of this test's end however it ends (even
# SIGKILL), and flock with it.
_lv_lock_pid=

_lv_hold ()                     # -s|-x SECONDS
{
  local f=$TEST_DIR/.locked.$RANDOM
  flock -o "$1" -w "$2" "$LV_LOCK" \
    sh -c 'touch "$1"; while kill -0 "$2" 2>/dev/null; do sleep 1; done' \
    sh "$f" $$ </dev/null >/dev/null 2>&1 &
  _lv_lock_pid=$!
  until [ -e "$f" ]; do
    if ! kill -0 "$_lv_lock_pid" 2>/dev/null; then
      _lv_lock_pid=
      return 1
    fi
    sleep 0.1
  done
  rm -f "$f"
}

_lv_release ()
{
  if [ -n "$_lv_lock_pid" ]; then
    kill "$_lv_lock_pid" 2>/dev/null
    wait "$_lv_lock_pid" 2>/dev/null
    _lv_lock_pid=
  fi
}

_lv_lock_shared ()
{
  on_exit _lv_release
  _lv_hold -s 600 || fail "waited 10 min for $LV_LOCK (a libvirt test restarting libvirtd?)"
}

lv_exclusive ()
{
  _lv_release
  _lv_hold -x 300
}

# Start virtlogd or libvirtd -d with none of this shell's files open (the
# test's log, pipes, a lock a caller may hold), from /.
lv_daemon ()
{
  (
    cd / || exit 1
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done 2>/dev/null
    exec "$1" -d </dev/null >/dev/null 2>&1
  )
}

# virtlogd must be running, not only its socket present: a socket left by
# a virtlogd that died (or was started by a package's postinst and killed
# with its session) makes every "virsh start" fail with ECONNREFUSED.
lv_virtlogd ()
{
  local i
  # -r: not a zombie (PID 1 here may be slow to reap a killed one).
  pgrep -x -r R,S,D virtlogd >/dev/null 2>&1 &&
    [ -S /run/libvirt/virtlogd-sock ] && return 0
  pkill -x virtlogd 2>/dev/null
  rm -f /run/libvirt/virtlogd-sock /run/libvirt/virtlogd-admin-sock
  lv_daemon virtlogd || return 1
  for ((i = 0; i < 100; i++)); do
    [ -S /run/libvirt/virtlogd-sock ] && return 0
    sleep 0.1
  done
  return 1
}

lv_started_libvirtd ()
{
  [ -s "$LV_MARK" ] && [ "$(cat "$LV_MARK")" = "$(pgrep -x -o libvirtd)" ]
}

lv_running ()
{
  [ "$(lv_virsh domstate "$1" 2>/dev/null)" = running ]
}

# A word quoted for virsh's command parser (single quotes; a quote as \').
_lv_vq ()
{
  local q="'\\''"
  printf "'%s'" "${1//\'/$q}"
}

lv_cleanup ()
{
  local d p l
  local -A running=() seen=()
  while read -r d; do
    [ -n "$d" ] && running[$d]=1
  done < <(lv_virsh list --name 2>/dev/null)
  # One virsh session for all (a test may have made many domains).
  {
    for d in "${_lv_domains[@]}"; do
      [ -n "${seen[$d]:-}" ] && continue
      seen[$d]=1
      [ -n "${running[$d]:-}" ] && echo "destroy $(_lv_vq "$d")"
      echo "undefine $(_lv_vq "$d") --snapshots-metadata --nvram"
    done
    for p in "${_lv_pools[@]}"; do
      echo "pool-destroy $(_lv_vq "$p")"
      echo "pool-undefine $(_lv_vq "$p")"
    done
  } >"$TEST_DIR/.cleanup.virsh"
  lv_virsh <"$TEST_DIR/.cleanup.virsh" >/dev/null 2>&1
  unset seen
  local -A seen=()
  while read -r d; do
    [ -n "$d" ] && seen[$d]=1
  done < <(lv_virsh list --all --name 2>/dev/null)
  for d in "${_lv_domains[@]}"; do
    if [ -n "${seen[$d]:-}" ]; then
      echo "warning: domain $d is still defined after the cleanup" >&2
    fi
  done
  for l in "${_lv_loops[@]}"; do
    losetup -d "$l" 2>/dev/null
  done
  _lv_domains=() _lv_pools=() _lv_loops=()
}

# Remember a domain made outside lv_define (virsh define in a test).
lv_forget_later ()
{
  _lv_domains+=("$1")
}

_lv_xml_escape ()
{
  # Quoted replacements: bash 5.2 reads a bare & in one as the match.
  local s=$1 amp='&amp;' lt='&lt;' gt='&gt;' apos='&apos;' quot='&quot;'
  s=${s//&/"$amp"}
  s=${s//</"$lt"}
  s=${s//>/"$gt"}
  s=${s//\'/"$apos"}
  s=${s//\"/"$quot"}
  printf '%s' "$s"
}

lv_define ()
{
  local name=$1 spec type target src bus xml fmt pool vol uuid
  shift
  # Defined already: a redefinition (same UUID).
  uuid=$(lv_virsh domuuid "$name" 2>/dev/null)
  xml="<domain type='$LV_DOMTYPE'>
  <name>$(_lv_xml_escape "$name")</name>
${uuid:+  <uuid>$uuid</uuid>
}  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
"
  for spec in "$@"; do
    type=${spec%%:*}
    spec=${spec#*:}
    target=${spec%%:*}
    src=$(_lv_xml_escape "${spec#*:}")
    case $target in
      vd*) bus=virtio ;;
      sd*) bus=sata ;;
      hd*) bus=ide ;;
      *) fail "lv_define: target $target" ;;
    esac
    case $type in
      qcow2|raw|qed)
        xml+="    <disk type='file' device='disk'>
      <driver name='qemu' type='$type'/>
      <source file='$src'/>
      <target dev='$target' bus='$bus'/>
    </disk>
" ;;
      block)
        xml+="    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='$src'/>
      <target dev='$target' bus='$bus'/>
    </disk>
" ;;
      volume)
        pool=${src%%/*}
        vol=${src#*/}
        fmt=$(lv_virsh vol-dumpxml --pool "$pool" "$vol" 2>/dev/null |
              sed -n "s/.*<format type='\([a-z0-9]*\)'.*/\1/p" | head -1)
        xml+="    <disk type='volume' device='disk'>
      <driver name='qemu' type='${fmt:-raw}'/>
      <source pool='$pool' volume='$vol'/>
      <target dev='$target' bus='$bus'/>
    </disk>
" ;;
      cdrom)
        xml+="    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>"
        [ -n "$src" ] && xml+="
      <source file='$src'/>"
        xml+="
      <target dev='$target' bus='$bus'/>
      <readonly/>
    </disk>
" ;;
      net)
        # net:TARGET:<source protocol=...>...</source> (raw XML, with the
        # <auth> inside it when there is one): a network disk, raw.
        xml+="    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      ${spec#*:}
      <target dev='$target' bus='$bus'/>
    </disk>
" ;;
      *) fail "lv_define: disk type $type" ;;
    esac
  done
  xml+="    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
    <video><model type='cirrus'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"
  printf '%s' "$xml" >"$TEST_DIR/define.xml"
  _lv_domains+=("$name")
  lv_virsh define "$TEST_DIR/define.xml" >/dev/null ||
    fail "virsh define $name: $(cat "$TEST_DIR/define.xml")"
}

lv_pool ()
{
  local name=$1 dir=$2
  mkdir -p "$dir"
  _lv_pools+=("$name")
  lv_virsh pool-define-as "$name" dir --target "$dir" >/dev/null ||
    fail "pool-define-as $name"
  lv_virsh pool-start "$name" >/dev/null || fail "pool-start $name"
}

lv_loop ()
{
  LV_LOOP=$(losetup -f --show "$1") || skip "no loop device for $1"
  _lv_loops+=("$LV_LOOP")
}

lv_alive ()
{
  local pid
  pid=$(vmdiskfs_pid "$1")
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    tail -20 "$(vmdiskfs_log "$1")" >&2
    wait "$pid" 2>/dev/null
    fail "the daemon serving $1 died (exit status $?; log above)"
  fi
}

lv_image ()
{
  qemu-img create -q -f "$1" "$2" "$3" || fail "qemu-img create -f $1 $2 $3"
}

lv_writer_bootsector ()
{
  local out=$1 o=$TEST_DIR/.writer
  require as ld objcopy
  as --32 -o "$o.o" "$_lv_here/writer-bootsector.S" &&
    ld -m elf_i386 -Ttext=0x7c00 -o "$o.elf" "$o.o" &&
    objcopy -O binary -j .text "$o.elf" "$out" ||
    fail "assembling writer-bootsector.S"
  [ "$(stat -c %s "$out")" = 512 ] || fail "the boot sector is $(stat -c %s "$out") bytes"
  rm -f "$o.o" "$o.elf"
}

lv_write_bootsector ()
{
  local img=$1 bs=$TEST_DIR/.writer.bin fmt
  [ -s "$bs" ] || lv_writer_bootsector "$bs"
  fmt=$(qemu-img info --output=json "$img" |
        sed -n 's/.*"format": "\([a-z0-9]*\)".*/\1/p' | head -1)
  qemu-io -f "$fmt" -c "write -s $bs 0 512" "$img" >/dev/null ||
    fail "writing the boot sector into $img"
}

lv_allocated ()
{
  qemu-img map -U --output=json "$1" |
    python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'
}

lv_mount ()
{
  local mnt=$1
  shift
  # Before libvirt mode lands the daemon refuses to start without images=.
  if timeout 20 "$VMDISKFS" -o connect="$LV_URI" "$TEST_DIR/.nomnt" 2>&1 |
       grep -q 'libvirt mode is not built yet'; then
    skip "vmdiskfs has no libvirt mode yet"
  fi
  start_vmdiskfs "$mnt" -o connect="$LV_URI" "$@"
}

lv_raw_oracle ()
{
  local img=$1 out=$2 snap=${3:-} fmt
  fmt=$(qemu-img info -U --output=json "$img" |
        sed -n 's/.*"format": "\([a-z0-9]*\)".*/\1/p' | head -1)
  if [ -z "$snap" ]; then
    qemu-img convert -U -f "$fmt" -O raw "$img" "$out" ||
      fail "qemu-img convert -U $img"
  else
    cp --sparse=always "$img" "$out.revert" || fail "cp $img"
    qemu-img snapshot -a "$snap" "$out.revert" || fail "qemu-img snapshot -a $snap"
    qemu-img convert -O raw "$out.revert" "$out" || fail "qemu-img convert $out.revert"
    rm -f "$out.revert"
  fi
}

lv_escape ()
{
  local s=$1
  case $s in
    .) echo '%2E'; return ;;
    ..) echo '%2E%2E'; return ;;
  esac
  s=${s//%/%25}
  s=${s//\//%2F}
  printf '%s\n' "$s"
}

# The writer boot sector's counter (sector 1: "VDTW", count, errors) read
# from IMG while the guest runs; "0 0" before the guest started writing.
lv_writer_count ()
{
  local b
  b=($(qemu-io -U -r -c "read -v 512 12" "$1" 2>/dev/null | head -1))
  if [ "${b[1]:-}${b[2]:-}${b[3]:-}${b[4]:-}" != 56445457 ]; then
    echo "0 0"
    return
  fi
  echo $((16#${b[8]}${b[7]}${b[6]}${b[5]})) $((16#${b[12]}${b[11]}${b[10]}${b[9]}))
}

failures=0

check ()                        # MESSAGE COMMAND...
{
  local msg=$1
  shift
  if ! "$@"; then
    lv_alive "$MNT"
    echo "FAIL: $msg" >&2
    failures=$((failures + 1))
  fi
}

same_bytes () { cmp -s "$1" "$2"; }
eq () { [ "$1" = "$2" ]; }
