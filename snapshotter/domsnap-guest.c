/* vmdiskfs - domain snapshots: the guest's filesystems frozen and
 * thawed through its guest agent (quiesce, domsnap.h), and the test hook
 * that fakes it.
 *
 * Threads: no state.
 *
 * SPDX-License-Identifier: GPL-3.0-or-later
 */
#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "domsnap-int.h"
#include "virt.h"
#include "log.h"

/* Freeze and thaw the guest's filesystems through its agent.  The agent
 * answers only while the guest runs: freeze before pausing, thaw after
 * resuming.  Tests: VMDISKFS_DOMSNAP_FAKE_FREEZE=1 pretends the agent
 * froze them (no agent is asked, a warning says so) and checks, as an
 * agent would fail, that the domain runs when they are thawed. */
static bool
fake_freeze (void)
{
  const char *e = getenv ("VMDISKFS_DOMSNAP_FAKE_FREEZE");

  return e && strcmp (e, "1") == 0;
}

int
guest_freeze (const struct dom *m)
{
  if (fake_freeze ()) {
    vd_warn ("domain %s: filesystems frozen (fake: "
             "VMDISKFS_DOMSNAP_FAKE_FREEZE, no agent asked)", m->name);
    return 0;
  }
  return virDomainFSFreeze (m->d, NULL, 0, 0) < 0 ? -1 : 0;
}

int
guest_thaw (const struct dom *m, const char *when)
{
  int i;

  if (fake_freeze ()) {
    int st = VIR_DOMAIN_NOSTATE, reason;
    if (virDomainGetState (m->d, &st, &reason, 0) < 0 ||
        st != VIR_DOMAIN_RUNNING) {
      vd_error ("domain %s: %s: thawing its filesystems: the domain does "
                "not run (state %d): a guest agent could not answer "
                "(VMDISKFS_DOMSNAP_FAKE_FREEZE)", m->name, when, st);
      return -1;
    }
    vd_warn ("domain %s: filesystems thawed (fake: "
             "VMDISKFS_DOMSNAP_FAKE_FREEZE, no agent asked)", m->name);
    return 0;
  }
  /* A guest left frozen blocks every write in it: try thrice. */
  for (i = 0; virDomainFSThaw (m->d, NULL, 0, 0) < 0; i++) {
    if (i == 2) {
      virt_fail (VIRT_ALL, "domain %s: %s: thawing its filesystems (they "
                 "may stay frozen: virsh domfsthaw %s)", m->name, when,
                 m->name);
      return -1;
    }
    vd_warn ("domain %s: thawing its filesystems failed (%s), trying "
             "again", m->name, virGetLastErrorMessage ());
    ds_sleep_ms (1000);
  }
  return 0;
}

