/* The lab's sensor firmware, for the BBC micro:bit that QEMU emulates (nRF51822, Cortex-M0).
 *
 * At reset it prints the line in message.inc (".ascii ...", written by edgebed.lab.boards for
 * each build) on UART0, then sleeps (wfi) with no interrupt enabled: QEMU then uses no CPU.
 * Built with binutils-arm-none-eabi only:
 *
 *   arm-none-eabi-as -I BUILD_DIR [--defsym SILENT=1] [--defsym UICR=1] -o fw.o sensor_firmware.S
 *   arm-none-eabi-ld -Ttext=0 --section-start=.uicr=0x10001080 -e reset -o fw.elf fw.o
 *
 * SILENT=1: prints nothing, as a firmware that waits for a radio QEMU does not have.
 * UICR=1: also carries a word for the UICR's customer registers (0x10001080), which a debugger's
 * writes do not change on this board: the firmware loads without an error, and a verify that
 * reads the board back finds it does not hold that section.
 */
    .syntax unified
    .cpu cortex-m0
    .thumb

    .text
vectors:
    .word 0x20004000            /* initial stack pointer: the top of the 16 KiB of RAM */
    .word reset + 1             /* reset handler, Thumb */

    .equ UART0, 0x40002000
    .equ STARTTX, 0x008
    .equ TXDRDY, 0x11C
    .equ ENABLE, 0x500
    .equ TXD, 0x51C

    .global reset
    .thumb_func
reset:
.ifndef SILENT
    ldr r0, =UART0
    movs r1, #4                 /* ENABLE = 4: UART on */
    ldr r2, =ENABLE
    str r1, [r0, r2]
    movs r1, #1
    str r1, [r0, #STARTTX]
    ldr r3, =message
next:
    ldrb r1, [r3]
    cmp r1, #0
    beq sleep
    ldr r2, =TXDRDY
    movs r4, #0
    str r4, [r0, r2]            /* clear the "sent" event */
    ldr r2, =TXD
    str r1, [r0, r2]
    ldr r2, =TXDRDY
wait:
    ldr r4, [r0, r2]
    cmp r4, #0
    beq wait
    adds r3, #1
    b next
.endif
sleep:
    wfi
    b sleep

    .pool
message:
    .include "message.inc"
    .byte 0

.ifdef UICR
    .section .uicr, "a"
    .word 0x0000002a
.endif
