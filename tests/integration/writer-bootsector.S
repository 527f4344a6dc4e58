# vmdiskfs - a guest that writes: a 512-byte x86 boot sector for the
# libvirt tests ("test it with a guest that writes, not only an idle one").
# SeaBIOS loads it from sector 0 of the boot disk at 0000:7C00 and jumps
# here in 16-bit real mode, with the BIOS drive number in DL.  It never
# returns: forever it fills a 4 KiB buffer with a counter and writes it
# with int 13h AH=43h (extended write, LBA packet) to 8 sectors somewhere
# on the disk, stepping through all 4 KiB slots of the disk in a
# scattered order (slot = i * 7919 mod slots), so qemu keeps allocating
# new qcow2 clusters and rewriting old ones with changing bytes.  Sector
# 1 holds "VDTW", the counter and the number of failed writes, rewritten
# every 4 writes, so a test can watch the guest make progress.  Sector 0
# is never written.  After each burst of 4 writes it halts until the next
# timer interrupt (18.2 Hz), so it writes about 70 x 4 KiB a second and
# a test machine with 2 CPUs keeps breathing (a busy wait would not).
#
# Build (GNU binutils):
#   as --32 -o w.o writer-bootsector.S
#   ld -m elf_i386 -Ttext=0x7c00 -o w.elf w.o
#   objcopy -O binary -j .text w.elf w.bin     # exactly 512 bytes
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
        movb    %dl, drive
        xorl    %eax, %eax              # .bss is not cleared for us
        movl    %eax, counter
        movl    %eax, errors

        # Disk size in sectors: int 13h AH=48h (extended drive parameters).
        movw    $0x1a, params
        movb    $0x48, %ah
        movb    drive, %dl
        movw    $params, %si
        int     $0x13
        jc      1f
        movl    params+0x10, %eax       # total sectors, low dword
        cmpl    $0, params+0x14         # more than 2 TiB: use 2 TiB
        je      2f
1:      movl    $0xfffffff0, %eax
        jmp     3f
2:      cmpl    $64, %eax               # too small (or nonsense): 64 sectors
        jae     3f
        movl    $64, %eax
3:      subl    $8, %eax                # slots start at sector 8
        shrl    $3, %eax                # 4 KiB slots
        movl    %eax, slots
        movl    %eax, %ecx              # mult = 7919 mod slots (or 1), so
        movl    $7919, %eax             # x * mult / slots never overflows
        xorl    %edx, %edx
        divl    %ecx
        testl   %edx, %edx
        jnz     4f
        incl    %edx
4:      movl    %edx, mult

        # Resume: when sector 1 holds "VDTW" (an earlier run, or the disk
        # restored from a backup of one), count on from its counter.
        movl    $1, dap_lba
        movw    $1, dap_count
        movb    $0x42, %ah              # int 13h AH=42h: extended read
        movb    drive, %dl
        movw    $dap, %si
        int     $0x13
        jc      main_loop
        cmpl    $0x57544456, buffer     # "VDTW"
        jne     main_loop
        movl    buffer+4, %eax
        movl    %eax, counter

main_loop:
        incl    counter

        # The buffer: 1024 dwords of the counter.
        movl    counter, %eax
        movw    $buffer, %di
        movw    $1024, %cx
        rep stosl

        # slot = (counter mod slots) * mult mod slots; lba = 8 + 8 * slot
        movl    counter, %eax
        xorl    %edx, %edx
        divl    slots
        movl    %edx, %eax
        mull    mult
        divl    slots
        movl    %edx, %eax
        shll    $3, %eax
        addl    $8, %eax
        movl    %eax, dap_lba
        movw    $8, dap_count
        call    write

        # Every 4 writes: the progress sector, then a nap.
        testb   $3, counter
        jnz     main_loop
        movw    $buffer, %di
        movl    $0x57544456, %eax       # "VDTW"
        stosl
        movl    counter, %eax
        stosl
        movl    errors, %eax
        stosl
        movl    $1, dap_lba
        movw    $1, dap_count
        call    write
        sti                             # sleep until the next timer tick
        hlt
        jmp     main_loop

# int 13h AH=43h: write dap_count sectors at dap_lba from buffer.
write:
        movb    $0x43, %ah
        movb    $0, %al                 # no verify
        movb    drive, %dl
        movw    $dap, %si
        int     $0x13
        jnc     1f
        incl    errors
        movb    $0x00, %ah              # reset the drive after an error
        movb    drive, %dl
        int     $0x13
1:      ret

        .balign 4
dap:    .byte   16, 0                   # packet size, reserved
dap_count:
        .word   8
        .word   buffer, 0               # offset, segment
dap_lba:
        .long   0, 0

        .org    510
        .word   0xaa55

# Not part of the 512 bytes: memory right after the boot sector.
        .bss
drive:  .byte   0
        .balign 4
counter: .long  0
errors: .long   0
slots:  .long   0
mult:   .long   0
params: .space  0x20
        .balign 16
buffer: .space  4096
