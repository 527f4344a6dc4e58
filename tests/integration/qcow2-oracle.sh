#!/bin/bash
# placeholder until the qcow2 oracle test lands
exit 77
