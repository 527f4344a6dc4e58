# vmdiskfs - a guest that writes to all its disks in turn: a 512-byte x86
# boot sector for tests/lvm/snapshots-lvm.sh, to see that a snapshot of a
# running domain holds every disk at one point in time.
# SeaBIOS loads it from sector 0 of the boot disk (BIOS drive 0x80) at
# 0000:7C00.  Forever: counter += 1, then for each of the BIOS drives
# 0x81, 0x82 and 0x83, in this order, write one sector at LBA 4096 (2 MiB
# into the disk) holding "VDTC", the drive number and the counter (little
# endian dwords, the counter repeated to the end), with int 13h AH=43h;
# then halt for two timer ticks (the timer runs at 18.2 Hz).  A
# consistent snapshot of the three disks thus has counters
# c81 >= c82 >= c83 >= c81 - 1.  SeaBIOS numbers only the disks that have
# a boot order when libvirt passes -boot strict=on: give each one.
#
# Build (GNU binutils):
#   as --32 -o c.o counter-bootsector.S
#   ld -m elf_i386 -Ttext=0x7c00 -o c.elf c.o
#   objcopy -O binary -j .text c.elf c.bin     # exactly 512 bytes
# SPDX-License-Identifier: GPL-3.0-or-later

        .code16
        .text
        .globl  _start
_start:
        cli
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    $0x7c00, %sp
        sti
        cld
        xorl    %eax, %eax              # .bss is not cleared for us
        movl    %eax, counter

round:
        incl    counter
        movb    $0x81, drive
disk:
        movw    $buffer, %di
        movl    $0x43544456, %eax       # "VDTC"
        stosl
        movzbl  drive, %eax
        stosl
        movl    counter, %eax
        movw    $126, %cx
        rep stosl
        movb    $0x43, %ah              # extended write, no verify
        movb    $0, %al
        movb    drive, %dl
        movw    $dap, %si
        int     $0x13
        incb    drive
        cmpb    $0x84, drive
        jne     disk
        sti                             # sleep for two timer ticks: about
        hlt                             # 9 rounds a second, enough to see
        hlt                             # a gap and light on TCG in TCG
        jmp     round

        .balign 4
dap:    .byte   16, 0                   # packet size, reserved
        .word   1                       # sectors
        .word   buffer, 0               # offset, segment
        .long   4096, 0                 # LBA

        .org    510
        .word   0xaa55

# Not part of the 512 bytes: memory right after the boot sector.
        .bss
drive:  .byte   0
        .balign 4
counter: .long  0
buffer: .space  512
